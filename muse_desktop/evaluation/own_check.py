"""A person's own blind check of their new add-on, as in the preference research.

After a person's new add-on model is trained, the person gets a few of their own
kinds of questions (the prompts and user types of their own preference records),
answered by

- ``new``: their new add-on (on top of the computer's add-ons, e.g. MUsE's),
- ``other``: another person's add-on, when someone else on this computer has one,
- ``baseline``: the computer's model with only the computer's add-ons,

shown without names in a random order per question (seeded; the order is stored, so
it is reproducible). They pick the best answer of each question and may rate each
one 1–5. The new add-on becomes the person's own only when it was picked more often
than the baseline, or the person chooses it anyway; otherwise their previous add-on
(which may be none) stays.

A check is a comparison session of :mod:`muse_desktop.evaluation.compare` that belongs
to the person (the store removes it with them); its contenders carry their role and
add-ons. No Qt here: ``muse_desktop.ui.own_check`` shows it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import CancelToken, Cancelled, Done, Event, Progress
from muse_desktop.household import own_model, people

ROLES = ("new", "other", "baseline")
QUESTIONS = 4
MAX_TOKENS = 200


class OwnCheckError(MuseError, ValueError):
    """A check that cannot be made or used as asked; the message says why in plain words."""


@dataclass
class Decision:
    kept: bool  # the new add-on is now the person's own
    message: str  # what the person reads
    tally: dict[str, int] = field(default_factory=dict)  # role -> times picked as best
    chosen_anyway: bool = False


def questions_for(store, person_id: int, count: int = QUESTIONS) -> list[tuple[str, str]]:
    """(user type, question) from the person's own preference records: the latest different ones first."""
    out: list[tuple[str, str]] = []
    for record in reversed(store.preferences(person_id)):
        pair = (record["user_type"].strip(), " ".join(record["prompt"].split()))
        if pair[0] and pair[1] and pair not in out:
            out.append(pair)
        if len(out) == count:
            break
    return out


def _other_adapter(store, settings, person_id: int, new_adapter: str) -> tuple[str, str, float] | None:
    """(name, path, scale) of another person's add-on on this computer, or None."""
    for person in store.profiles():  # by name: the same one every time
        path = person.adapter_path
        if (person.id != person_id and path and path not in (new_adapter, settings.adapter_path)
                and Path(path).is_file()):
            return person.name, path, person.adapter_scale
    return None


def new_check(store, settings, person_id: int, new_adapter: str | Path, seed: int | None = None,
              scale: float = 1.0, count: int = QUESTIONS) -> int:
    """A check of ``new_adapter`` for the person; its id. Call it before the add-on is made theirs."""
    new_adapter = str(new_adapter)
    if not Path(new_adapter).is_file():
        raise OwnCheckError(f"The new add-on {Path(new_adapter).name} is not there any more.")
    if not settings.model_path or not Path(settings.model_path).is_file():
        raise OwnCheckError("MUsE has no model to answer with yet.", advice="Choose a model in the chat first.")
    person = store.profile(person_id)
    questions = questions_for(store, person_id, count)
    if not questions:
        raise OwnCheckError(f"{person.name} has not chosen any answers yet, so there are no questions to try.",
                            advice="Use “Choose from 4” in the chat a few times first.")
    model = settings.model_path
    computer = people.adapters_for(settings, None)
    mine = people.adapters_for(settings, people.Profile(person.id, person.name, adapter_path=new_adapter,
                                                        adapter_scale=scale))
    contenders = [{"name": "Your new model", "role": "new", "path": model, "adapter": new_adapter,
                   "adapters": mine}]
    other = _other_adapter(store, settings, person_id, new_adapter)
    if other is not None:
        name, path, other_scale = other
        contenders.append({"name": f"{name}'s model", "role": "other", "path": model, "adapter": path,
                           "adapters": people.adapters_for(settings, people.Profile(0, name, adapter_path=path,
                                                                                    adapter_scale=other_scale))})
    contenders.append({"name": "MUsE without your add-on", "role": "baseline", "path": model,
                       "adapter": settings.adapter_path, "adapters": computer})
    info = {"kind": "own-check", "new_adapter": new_adapter, "scale": float(scale),
            "previous": [person.adapter_path, person.adapter_scale], "questions": questions}
    return store.add_own_check(person.id, person.name, contenders,
                               seed if seed is not None else random.randrange(2**31), info)


def greedy(max_tokens: int = MAX_TOKENS):
    """The sampling every contender answers with: the most likely words, the same every time."""
    from muse_desktop.chat.engine import Sampling

    return Sampling(temperature=0.0, max_new_tokens=max_tokens)


def generate(store_path: str | Path, check_id: int, model_path: str | Path, cancel: CancelToken | None = None,
             max_tokens: int = MAX_TOKENS, engine_settings=None) -> Iterator[Event]:
    """Every contender answers every question greedily; the answers are stored shuffled per question.

    One engine: the model is opened once and each contender's add-ons are put on with
    ``set_adapters``. Opens its own database connection (it runs on a worker thread).
    """
    from muse_desktop.base.prompting import Turn
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings
    from muse_desktop.chat.store import Store

    store = Store(store_path)
    try:
        check = store.own_check(check_id)
        if store.own_check_answers(check_id):
            raise OwnCheckError("This check already has its answers.")
        contenders, questions = check["models"], [tuple(q) for q in check["info"]["questions"]]
        total, done = len(contenders) * len(questions), 0
        answers: dict[tuple[int, int], str] = {}
        yield Progress(0, total, "answers", "Opening the model")
        engine = ChatEngine(model_path, engine_settings or EngineSettings())
        try:
            for index, contender in enumerate(contenders):
                engine.set_adapters([AdapterSpec(path, scale) for path, scale in contender["adapters"]])
                for number, (user_type, question) in enumerate(questions):
                    if cancel is not None:
                        cancel.check()
                    result = [e for e in engine.generate(user_type, [Turn("user", question)], None,
                                                         greedy(max_tokens), cancel=cancel)
                              if isinstance(e, Done)][-1]
                    if result.data["stopped"] == "cancelled":  # a cut-off answer is never judged as one
                        raise Cancelled("cancelled")
                    answers[(number, index)] = result.data["text"].strip()
                    done += 1
                    yield Progress(done, total, "answers", f"Answer {done} of {total} written")
        finally:
            engine.close()
        shuffler = random.Random(check["seed"])
        shown = []
        for number, (user_type, question) in enumerate(questions):
            order = list(range(len(contenders)))
            shuffler.shuffle(order)
            shown += [(number, position, index, user_type, question, answers[(number, index)])
                      for position, index in enumerate(order)]
        store.add_comparison_answers(check_id, shown)
    finally:
        store.close()
    yield Done(f"{total} answers ready", data={"check": check_id, "rounds": len(questions)})


def rounds(store, check_id: int) -> list[list[dict]]:
    """Each question's answers in the order the person sees them: no role, no name, no add-on."""
    grouped: dict[int, list[dict]] = {}
    for row in store.own_check_answers(check_id):
        grouped.setdefault(row["round"], []).append(row)
    return [grouped[key] for key in sorted(grouped)]


def _answer(store, check_id: int, answer_id: int) -> dict:
    for row in store.own_check_answers(check_id):
        if row["id"] == answer_id:
            return row
    raise OwnCheckError("That answer is not part of this check.")


def pick(store, check_id: int, round: int, answer_id: int) -> None:  # noqa: A002 (the store's word)
    """The person finds ``answer_id`` the best answer of question ``round`` (0-based)."""
    if _answer(store, check_id, answer_id)["round"] != round:
        raise OwnCheckError("That answer belongs to another question.")
    store.pick_comparison_answer(answer_id)


def rate(store, check_id: int, answer_id: int, rating: int | None) -> None:
    """The person's 1–5 for one answer (None takes it away)."""
    if rating is not None and not 1 <= int(rating) <= 5:
        raise OwnCheckError("Ratings go from 1 to 5.")
    _answer(store, check_id, answer_id)
    store.set_answer_rating(answer_id, None if rating is None else int(rating))


def tally(store, check_id: int) -> dict[str, int]:
    """How often each role's answer was picked as best (every role of the check, 0 when never)."""
    roles = [c["role"] for c in store.own_check(check_id)["models"]]
    counts = dict.fromkeys(roles, 0)
    for row in store.own_check_results(check_id):
        if row["best"]:
            counts[roles[row["model_index"]]] += 1
    return counts


def ratings(store, check_id: int) -> dict[str, float | None]:
    """The mean 1–5 rating of each role's answers (None when none was rated)."""
    roles = [c["role"] for c in store.own_check(check_id)["models"]]
    given: dict[str, list[int]] = {role: [] for role in roles}
    for row in store.own_check_results(check_id):
        if row["rating"] is not None:
            given[roles[row["model_index"]]].append(row["rating"])
    return {role: (sum(v) / len(v) if v else None) for role, v in given.items()}


def _times(count: int) -> str:
    return {0: "never", 1: "once", 2: "twice"}.get(count, f"{count} times")


def summary_words(counts: dict[str, int], questions: int) -> str:
    """The counts in plain words: 'You picked your new model 3 times out of 4, the usual MUsE once.'"""
    new = counts.get("new", 0)
    words = f"You picked your new model {_times(new)} out of {questions}"
    if new == 0:
        words = f"Out of {questions} questions, you never picked your new model"
    words += f", the usual MUsE {_times(counts.get('baseline', 0))}"
    if "other" in counts:
        words += f", and another person's model {_times(counts['other'])}"
    return words + "."


def decide(store, check_id: int, choose_anyway: bool = False) -> Decision:
    """Apply the rule, make the new add-on the person's own when it is kept, and store the decision.

    Kept when the new add-on was picked more often than the baseline, or when the
    person chooses it anyway; otherwise the person's add-on is left as it was. Either
    way the candidate that own_model keeps for the person is settled (accepted or let go).
    """
    check = store.own_check(check_id)
    info = check["info"]
    counts = tally(store, check_id)
    questions = len(info["questions"])
    won = counts.get("new", 0) > counts.get("baseline", 0)
    kept = won or choose_anyway
    words = summary_words(counts, questions)
    previous = info["previous"][0]
    person_id = check["profile_id"]
    if kept:  # hers now; the add-on she had is remembered as her previous one
        own_model.accept(store, person_id, info["new_adapter"], info["scale"])
    elif own_model.candidate(store, person_id) == info["new_adapter"]:
        own_model.turn_down(store, person_id)  # not waiting for a decision any more
    if kept:
        if won:
            message = f"{words} Your new model is now used for you."
        else:
            message = f"{words} You chose your new model anyway: it is now used for you."
    elif previous and previous != info["new_adapter"]:
        message = f"{words} Your earlier model stays, and answers you as before."
    else:
        message = f"{words} MUsE keeps answering you as before."
    decision = Decision(kept, message, counts, choose_anyway and not won)
    info["decision"] = {"kept": kept, "chosen_anyway": decision.chosen_anyway, "message": message,
                        "tally": counts, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.set_own_check_info(check_id, info)
    return decision


def checks_for(store, person_id: int) -> list[dict]:
    """A person's checks, newest first: id, when, the add-on, the counts, the ratings and the decision (or None)."""
    out = []
    for check in store.own_checks(person_id):
        out.append({"id": check["id"], "created_at": check["created_at"], "new_adapter": check["info"]["new_adapter"],
                    "questions": len(check["info"]["questions"]), "tally": tally(store, check["id"]),
                    "ratings": ratings(store, check["id"]), "decision": check["info"].get("decision")})
    return out
