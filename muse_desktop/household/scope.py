"""Kiosk mode's scope guard: is a question about what this kiosk is for?

Trained with scikit-learn — TF-IDF features (words and word pairs) and logistic
regression with balanced class weights, as in the museum-guide study — on the
in-scope questions of a dataset against a general out-of-scope set shipped in
``resources/out_of_scope.txt``. Precision, recall and F1 on a held-out split are
reported before the guard may be switched on, and it refuses with too little data.

The trained guard is saved as plain JSON (vocabulary, idf weights, coefficients) and
applied with numpy alone, so the chat app needs no scikit-learn; a test checks that
the numpy scores equal scikit-learn's.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from muse_desktop.base.errors import MuseError
from muse_desktop.base.fileio import atomic_write_text
from muse_desktop.base.paths import resource, user_dirs

GUARD_FILE = "scope_guard.json"
MIN_PER_CLASS = 20  # fewer examples than this on either side and the guard refuses to train
MIN_F1 = 0.8  # below this on the held-out split it may not be switched on
THRESHOLD = 0.5
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
REFUSAL = ("I'm sorry, I can only help with questions about {topic} here. "
           "Please ask me something about {topic}.")
NO_GUARD_REFUSAL = "I'm sorry, I can't answer questions right now. Please ask the person who looks after me."


class ScopeError(MuseError, ValueError):
    """The scope guard cannot be trained or read; the message says why."""

    exit_code = 2  # the command line: what was given cannot be used


def guard_path() -> Path:
    return user_dirs().data / GUARD_FILE


def out_of_scope_questions() -> list[str]:
    lines = resource("out_of_scope.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@dataclass
class ScopeGuard:
    vocabulary: dict[str, int]
    idf: list[float]
    coef: list[float]
    intercept: float
    topic: str = "this topic"
    threshold: float = THRESHOLD
    metrics: dict = field(default_factory=dict)

    def features(self, texts: list[str]) -> np.ndarray:
        """TF-IDF exactly as the scikit-learn vectorizer it was trained with (sublinear tf, l2 norm)."""
        rows = np.zeros((len(texts), len(self.vocabulary)))
        idf = np.asarray(self.idf)
        for i, text in enumerate(texts):
            tokens = TOKEN.findall(text.lower())
            grams = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
            for gram in grams:
                j = self.vocabulary.get(gram)
                if j is not None:
                    rows[i, j] += 1
            nonzero = rows[i] > 0
            rows[i, nonzero] = (1 + np.log(rows[i, nonzero])) * idf[nonzero]
            norm = np.linalg.norm(rows[i])
            if norm > 0:
                rows[i] /= norm
        return rows

    def in_scope_probability(self, texts: list[str]) -> np.ndarray:
        scores = self.features(texts) @ np.asarray(self.coef) + self.intercept
        return 1 / (1 + np.exp(-scores))

    def allows(self, question: str) -> bool:
        return bool(self.in_scope_probability([question])[0] >= self.threshold)

    def refusal(self) -> str:
        return REFUSAL.format(topic=self.topic)

    def save(self, path: Path | None = None) -> Path:
        path = path or guard_path()
        atomic_write_text(path, json.dumps(self.__dict__))
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> "ScopeGuard | None":
        """The saved guard, or None when it is missing or does not hold together."""
        path = path or guard_path()
        try:
            guard = cls(**json.loads(path.read_text(encoding="utf-8")))
            size = len(guard.vocabulary)
            if (len(guard.idf) != size or len(guard.coef) != size or size == 0
                    or any(not isinstance(j, int) or not 0 <= j < size for j in guard.vocabulary.values())
                    or not np.all(np.isfinite(np.asarray(guard.coef + guard.idf + [guard.intercept], dtype=float)))):
                return None
            return guard
        except (OSError, ValueError, TypeError, AttributeError):
            return None


@dataclass
class Verdict:
    allowed: bool
    refusal: str = ""  # what the person is told instead of an answer
    problem: str = ""  # for the caregiver: why everything is refused


class _LoadedGuard:
    """The guard loaded once and kept while its file stays the same: a question costs a stat, not a read.

    The file's identity (inode, size, modification and change times) is checked on every
    question, so a guard made again, damaged or removed is seen at the next question.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.guard: ScopeGuard | None = None
        self.loads = 0  # how many times a guard was read from disk (a test counts them)

    def get(self, path: Path) -> ScopeGuard | None:
        try:
            info = path.stat()
        except OSError:
            self.key, self.guard = None, None
            return None
        key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if key != self.key:
            self.guard = ScopeGuard.load(path)
            self.key = key
            self.loads += 1
        return self.guard


_loaded = _LoadedGuard()


def load_guard(path: Path | None = None) -> ScopeGuard | None:
    """The saved guard, read from disk only when its file changed since the last question."""
    return _loaded.get(path or guard_path())


def check_question(question: str, kiosk_mode: bool, path: Path | None = None) -> Verdict:
    """The one scope check every route to the model goes through; without a usable guard it refuses."""
    if not kiosk_mode:
        return Verdict(True)
    path = path or guard_path()
    guard = load_guard(path)
    if guard is None:
        return Verdict(False, NO_GUARD_REFUSAL,
                       f"Kiosk mode is on, but its guard ({path.name}) is missing or damaged, so every question is "
                       "refused. Caregiver: make the guard again (Caregiver menu, Kiosk mode) or switch kiosk mode off.")
    try:
        allowed = guard.allows(question)
    except (ValueError, TypeError, IndexError) as exc:
        return Verdict(False, NO_GUARD_REFUSAL, f"Kiosk mode's guard could not check the question ({exc}), "
                                               "so it was refused.")
    return Verdict(True) if allowed else Verdict(False, guard.refusal())


@dataclass
class ScopeReport:
    guard: ScopeGuard
    precision: float  # of "in scope" on the held-out split
    recall: float
    f1: float
    off_topic_blocked: float  # share of held-out off-topic questions refused
    n_train: int
    n_test: int

    @property
    def good_enough(self) -> bool:
        return self.f1 >= MIN_F1

    def summary(self) -> str:
        return (f"On {self.n_test} held-out questions: precision {self.precision:.2f}, recall {self.recall:.2f}, "
                f"F1 {self.f1:.2f}; {self.off_topic_blocked:.0%} of off-topic questions refused "
                f"(trained on {self.n_train}).")


def train_scope_guard(in_scope: list[str], out_of_scope: list[str] | None = None, topic: str = "this topic",
                      seed: int = 0, test_size: float = 0.25) -> ScopeReport:
    """Fit TF-IDF + logistic regression (balanced) and measure it on a held-out split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import precision_recall_fscore_support
    from sklearn.model_selection import train_test_split

    inside = list(dict.fromkeys(q.strip() for q in in_scope if q.strip()))
    outside = list(dict.fromkeys(q.strip() for q in (out_of_scope or out_of_scope_questions()) if q.strip()))
    if len(inside) < MIN_PER_CLASS or len(outside) < MIN_PER_CLASS:
        raise ScopeError(f"Too little data for the kiosk guard: {len(inside)} in-scope and {len(outside)} "
                         f"off-topic questions; at least {MIN_PER_CLASS} of each are needed.")
    texts, labels = inside + outside, [1] * len(inside) + [0] * len(outside)
    train_x, test_x, train_y, test_y = train_test_split(texts, labels, test_size=test_size, random_state=seed,
                                                        stratify=labels)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    model = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=seed)
    model.fit(vectorizer.fit_transform(train_x), train_y)
    guard = ScopeGuard({k: int(v) for k, v in vectorizer.vocabulary_.items()}, vectorizer.idf_.tolist(),
                       model.coef_[0].tolist(), float(model.intercept_[0]), topic)
    predicted = (guard.in_scope_probability(test_x) >= guard.threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(test_y, predicted, average="binary", zero_division=0)
    off = [p for p, y in zip(predicted, test_y, strict=True) if y == 0]
    report = ScopeReport(guard, float(precision), float(recall), float(f1),
                         1 - sum(off) / max(len(off), 1), len(train_x), len(test_x))
    guard.metrics = {"precision": report.precision, "recall": report.recall, "f1": report.f1,
                     "n_test": report.n_test, "n_train": report.n_train}
    if math.isnan(report.f1):
        raise ScopeError("The guard could not be measured.")
    return report
