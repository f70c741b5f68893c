"""Self-instruct augmentation: from a few seed records, the local model writes more in the same style.

Each round shows the model three seed pairs (chosen at random) and asks for a new
question and answer for the same user type, in the ``Question: … / Answer: …`` form.
Every reply is filtered, with the reasons counted: not in that form (malformed),
empty, too long, or a near-duplicate — ROUGE-L F-measure against every seed and
every pair kept so far above the threshold (0.7, as in Self-Instruct). What is kept
goes to the person for review; nothing is added to a dataset unseen.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator

from muse_desktop.data.docbuilder import parse_pair
from muse_desktop.base.events import CancelToken, Done, Event, Progress

WORD = re.compile(r"\w+", re.U)
PROMPT = ("Here are examples of questions from {user_type} with answers worded so that {user_type} "
          "understands:\n\n{examples}\n\nWrite one new, different question {user_type} might ask, and its "
          "answer in the same style. Reply in exactly this form:\nQuestion: <the question>\nAnswer: <the answer>")


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F-measure of two texts over lower-cased word tokens (longest common subsequence)."""
    x, y = WORD.findall(a.lower()), WORD.findall(b.lower())
    if not x or not y:
        return 0.0
    previous = [0] * (len(y) + 1)
    for token in x:
        current = [0]
        for j, other in enumerate(y, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(x), lcs / len(y)
    return 2 * precision * recall / (precision + recall)


def self_instruct(seeds: list[dict], ask: Callable[[str], str], count: int, threshold: float = 0.7,
                  max_chars: int = 1200, seed: int = 0, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Ask for ``count`` candidates; Done.data has the kept pairs and the counts of each filter."""
    if len(seeds) < 2:
        raise ValueError("Self-instruct needs at least two seed records.")
    rng = random.Random(seed)
    pool = [s["question"] for s in seeds]
    kept: list[dict] = []
    counts = {"kept": 0, "malformed": 0, "empty": 0, "too long": 0, "near-duplicate": 0}
    for n in range(count):
        if cancel is not None:
            cancel.check()
        user_type = rng.choice(seeds)["user_type"]
        same = [s for s in seeds if s["user_type"] == user_type] or seeds
        shown = rng.sample(same, min(3, len(same)))
        examples = "\n\n".join(f"Question: {s['question']}\nAnswer: {s['answer']}" for s in shown)
        reply = ask(PROMPT.format(user_type=user_type, examples=examples))
        pair = parse_pair(reply)
        if not reply or not reply.strip():
            counts["empty"] += 1
        elif pair is None:
            counts["malformed"] += 1
        elif len(pair[0]) + len(pair[1]) > max_chars:
            counts["too long"] += 1
        elif max((rouge_l(pair[0], other) for other in pool), default=0.0) > threshold:
            counts["near-duplicate"] += 1
        else:
            counts["kept"] += 1
            pool.append(pair[0])
            kept.append({"user_type": user_type, "question": pair[0], "answer": pair[1]})
        yield Progress(n + 1, count, "candidates", f"{counts['kept']} kept")
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    yield Done(f"Self-instruct: {summary}. Review the kept pairs before adding them.", data={"kept": kept,
                                                                                          "counts": counts})
