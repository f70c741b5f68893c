""""Make a model that answers the way I like": a person's own add-on, from their own choices.

The loop's first half (issue 16, part 3):

1. :func:`readiness` counts the person's choices (preference records with a best answer)
   and says in plain words how many more are needed.
2. :func:`suggest_more` grows the examples: the model in use writes new question and
   answer pairs in the style of the person's best answers (self-instruct); the person
   ticks the ones to keep, and only those go to the plan.
3. :func:`training_base` finds the Hugging Face checkpoint behind the model in use and,
   when MUsE is installed (as an add-on or merged in), MUsE's own PEFT adapter: the
   person's add-on is trained on top of MUsE (merged into the base in memory, the run's
   ``start_adapter``), which is the same arithmetic as the chat's base + MUsE's add-on +
   the person's add-on.
4. :func:`plan` writes the person's data and the stages' settings: a LoRA on their best
   answers, and a DPO stage on their best/worst pairs when there are enough of them.
5. :func:`make_model` runs the stages in the training child process (the loss events pass
   through for the live chart), exports the add-on as a GGUF LoRA checked by logits,
   adds it to the library for the person and keeps it as their *candidate*
   (profile setting ``candidate_adapter``): it becomes their default only through
   :func:`accept`, after the blind check (``evaluation/own_check.py``) or when the
   person chooses it anyway. The add-on they had stays until then.

No Qt here, and no torch: training happens in the child process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import CancelToken, Done, Event, Progress

# Why these numbers: an add-on learns a way of answering, not facts, and below about
# eight examples it copies the few answers it saw instead of learning their style (the
# research seeded self-instruct with a handful per person). A DPO stage learns from each
# best/worst pair only which of two answers is better, a weaker signal per example, so it
# waits for twice as many.
NEEDED_CHOICES = 8
NEEDED_PAIRS = 16
CANDIDATE = "candidate_adapter"  # profile setting: the add-on made last, waiting for the person's check
PREVIOUS = "previous_adapter"  # profile setting: the add-on they had before accepting a new one


class OwnModelError(MuseError, RuntimeError):
    """A person's own model cannot be made; the message says why in plain words."""


# -- 1. how many choices ------------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    choices: int  # preference records with a best answer
    needed: int
    pairs: int  # of those, with a worst answer different from the best (for the DPO stage)
    pairs_needed: int

    @property
    def ready(self) -> bool:
        return self.choices >= self.needed

    @property
    def more(self) -> int:
        return max(0, self.needed - self.choices)

    @property
    def dpo(self) -> bool:
        return self.pairs >= self.pairs_needed

    @property
    def words(self) -> str:
        chosen = f"You have chosen {_count(self.choices, 'answer')}."
        if not self.ready:
            return f"{chosen} Choose {self.more} more, then MUsE can learn from you."
        return f"{chosen} That is enough: MUsE can learn from you."

    @property
    def details(self) -> str:
        """The smaller words under the main ones: what the extra stage needs."""
        if self.dpo:
            return "MUsE will also learn from the answers you liked least."
        if self.ready:
            left = self.pairs_needed - self.pairs
            return f"After {_count(left, 'more choice')}, MUsE can also learn from the answers you liked least."
        return "In the chat, press “Choose from 4”, ask something, and mark the best and the worst answer."


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _best_rows(store, person_id: int) -> list[dict]:
    rows = []
    for record in store.preferences(person_id):
        candidates = record["candidates"]
        best = candidates[record["best"]]["text"].strip() if 0 <= record["best"] < len(candidates) else ""
        if best and record["prompt"].strip():
            worst = candidates[record["worst"]]["text"].strip() if 0 <= record["worst"] < len(candidates) else ""
            rows.append({"user_type": record["user_type"], "question": record["prompt"], "answer": best,
                         "worst": worst})
    return rows


def readiness(store, person_id: int) -> Readiness:
    rows = _best_rows(store, person_id)
    pairs = sum(1 for row in rows if row["worst"] and row["worst"] != row["answer"])
    return Readiness(len(rows), NEEDED_CHOICES, pairs, NEEDED_PAIRS)


# -- 2. more examples from the best answers ---------------------------------------------------------


def suggest_more(store, person_id: int, engine_or_ask, count: int = 8, cancel: CancelToken | None = None,
                 seed: int = 0) -> Iterator[Event]:
    """The model in use writes ``count`` new question + answer pairs in the style of the person's best
    answers (self-instruct with its filters); Done.data["kept"] lists them for the person to tick.

    The store is read here, at once (on the caller's thread); the writing happens as the events are read.
    ``engine_or_ask`` is a ChatEngine or a function from a prompt to a reply.
    """
    from muse_desktop.data.augment import self_instruct

    seeds = [{k: row[k] for k in ("user_type", "question", "answer")} for row in _best_rows(store, person_id)]
    if len(seeds) < 2:
        raise OwnModelError("MUsE needs at least two of your chosen answers to write more like them.",
                            advice="In the chat, press “Choose from 4” and pick the best answer a few times.")
    if callable(engine_or_ask) and not hasattr(engine_or_ask, "generate"):
        ask = engine_or_ask
    else:
        from muse_desktop.data.docbuilder import engine_teacher

        ask = engine_teacher(engine_or_ask)
    return self_instruct(seeds, ask, count, seed=seed, cancel=cancel)


# -- 3. what the add-on is trained on ---------------------------------------------------------------


@dataclass(frozen=True)
class TrainingBase:
    base_dir: Path  # the Hugging Face checkpoint behind the model in use
    start_adapter: Path | None  # MUsE's PEFT adapter, merged into the base before the person's add-on
    model_path: str  # the GGUF the chat uses (the person's add-on goes on it)
    muse_gguf: str = ""  # MUsE's GGUF add-on when MUsE is installed as base + add-on

    @property
    def words(self) -> str:
        on = "MUsE" if self.start_adapter else f"the model {self.base_dir.name}"
        return f"Your add-on is made on top of {on}."


NOT_FOUND_ADVICE = ("Choose MUsE again on the model page (Get MUsE keeps the files it needs), or use a model "
                    "made on the Trainer page.")


def _entry(store, path: str):
    return next((e for e in store.library() if e.path == path), None) if path else None


def _sidecar(path: str) -> dict:
    try:
        data = json.loads(Path(path + ".json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _where(path: str, store) -> tuple[Path | None, Path | None]:
    """(Hugging Face base, PEFT adapter inside the file) for a GGUF, from what is known about it."""
    from muse_desktop.training.runfolder import RunFolder

    entry = _entry(store, path)
    info = dict(entry.info) if entry is not None else {}
    info = info or _sidecar(path)
    if info.get("hf_dir"):  # a model converted from a checkpoint kept beside it (the demo, tests)
        return Path(info["hf_dir"]), Path(info["hf_adapter"]) if info.get("hf_adapter") else None
    if info.get("run"):  # made on the Trainer page
        run = RunFolder(info["run"])
        try:
            config = run.config()
        except MuseError:
            return None, None
        adapter = Path(info.get("adapter_dir") or run.adapter)
        if info.get("mode") == "adapter" or (entry is not None and entry.kind == "adapter"):
            return Path(config.base_model), adapter
        if config.start_adapter:  # merged from two add-ons: not one adapter to start from
            raise OwnModelError(f"The model {Path(path).name} was made from two add-ons at once; MUsE cannot "
                                "learn on top of it.", advice=NOT_FOUND_ADVICE)
        return Path(config.base_model), adapter
    if info.get("base_repo"):  # Get MUsE: the checkpoints are kept beside the GGUF files
        models = Path(path).parent
        base = models / str(info["base_repo"]).split("/")[-1]
        adapter_repo = str(info.get("adapter_repo") or "")
        inside = adapter_repo and info.get("way") != "base only"
        return base, models / ("adapter-" + adapter_repo.replace("/", "--")) if inside else None
    demo = Path(path).parent / "checkpoint"  # the demo model (models/demo_model.py)
    if Path(path).name.startswith("muse-demo") and (demo / "config.json").is_file():
        return demo, None
    return None, None


def training_base(settings, store) -> TrainingBase:
    """The checkpoint (and MUsE's adapter) behind the model in use; OwnModelError in plain words if not found."""
    model = settings.model_path
    if not model:
        raise OwnModelError("Choose a model to talk with first.", advice=NOT_FOUND_ADVICE)
    base, inside = _where(model, store)
    if base is None or not (base / "config.json").is_file() or not any(base.glob("*.safetensors")):
        raise OwnModelError(
            f"MUsE cannot find the original files of the model {Path(model).name} on this computer, so it "
            "cannot learn from your answers with it.", advice=NOT_FOUND_ADVICE)
    start = inside
    muse_gguf = settings.adapter_path or ""
    if muse_gguf:  # MUsE installed as base + add-on: find the add-on's own adapter
        add_on_base, add_on = _where(muse_gguf, store)
        if add_on is None or not (add_on / "adapter_model.safetensors").is_file():
            raise OwnModelError(
                f"MUsE cannot find the original files of the add-on {Path(muse_gguf).name}, so your add-on "
                "could not go on top of it.", advice=NOT_FOUND_ADVICE)
        if add_on_base is not None and add_on_base.resolve() != base.resolve():
            raise OwnModelError(f"The add-on {Path(muse_gguf).name} was made for another model.",
                                advice=NOT_FOUND_ADVICE)
        if start is not None:
            raise OwnModelError("The model in use already has an add-on inside it and another one on top; "
                                "MUsE can only learn on top of one.", advice=NOT_FOUND_ADVICE)
        start = add_on
    if start is not None and not (start / "adapter_model.safetensors").is_file():
        raise OwnModelError(f"MUsE cannot find the original files of the add-on inside {Path(model).name}.",
                            advice=NOT_FOUND_ADVICE)
    return TrainingBase(base, start, model, muse_gguf)


# -- 4. the plan ------------------------------------------------------------------------------------------


# Small enough for a laptop's CPU: a few passes over a person's few answers, rank 16.
SFT_SETTINGS = {"preset": "muse-3", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "learning_rate": 1e-3,
                "min_learning_rate": 1e-5, "batch_size": 2, "epochs": 4, "seq_len": 512, "validation_split": 0.0,
                "eval_questions": 0, "save_steps": 10, "save_total_limit": 2, "seed": 1}
DPO_SETTINGS = {"preset": "muse-3", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "learning_rate": 5e-4,
                "batch_size": 2, "epochs": 2, "seq_len": 512, "dpo_beta": 0.1, "save_steps": 10,
                "save_total_limit": 2, "seed": 1}


@dataclass
class Stage:
    name: str  # "learn" (the LoRA on the best answers) or "prefer" (DPO on best/worst)
    words: str
    config: object  # TrainConfig
    run_dir: Path


@dataclass
class OwnPlan:
    person_id: int
    person_name: str
    folder: Path
    base: TrainingBase
    data_path: Path
    examples: int  # best answers + ticked suggestions
    pairs_path: Path | None = None
    pairs: int = 0
    stages: list[Stage] = field(default_factory=list)

    @property
    def dpo_start(self) -> Path:
        """The DPO stage's start: MUsE's adapter (if any) and the first stage's add-on, as one."""
        return self.folder / "start-for-dpo"


def _plan_folder(person_id: int, runs_root: Path | None) -> Path:
    from muse_desktop.training.runfolder import runs_root as default_root

    root = Path(runs_root) if runs_root else default_root()
    folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-own-{person_id}"
    n = 1
    while folder.exists():
        n += 1
        folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-own-{person_id}-{n}"
    return folder


def plan(store, person, base: TrainingBase, extra_rows: Sequence[dict] = (), runs_root: Path | None = None,
         settings: dict | None = None, dpo_settings: dict | None = None, dpo: bool | None = None) -> OwnPlan:
    """Write the person's data (their best answers + ``extra_rows``, the ticked suggestions) and, with
    enough pairs (or ``dpo=True``), their best/worst pairs; the stages' settings, checked.

    ``settings``/``dpo_settings`` change the stages' training settings (for the tests' tiny model).
    """
    from muse_desktop.evaluation.preferences import export_instruction_data, export_pairs
    from muse_desktop.training.config import ConfigError, config_from_dict

    ready = readiness(store, person.id)
    if not ready.ready:
        raise OwnModelError(ready.words, advice="In the chat, press “Choose from 4” and pick the best answer.")
    folder = _plan_folder(person.id, runs_root)
    folder.mkdir(parents=True)
    data_path = folder / "my-answers.jsonl"
    export_instruction_data(store, data_path, person.id)
    extra = [{"user_type": r.get("user_type") or "", "question": r["question"], "answer": r["answer"]}
             for r in extra_rows if str(r.get("question", "")).strip() and str(r.get("answer", "")).strip()]
    if extra:
        with open(data_path, "a", encoding="utf-8") as handle:
            for row in extra:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    examples = ready.choices + len(extra)
    start = str(base.start_adapter or "")
    label = "".join(c if c.isalnum() else "-" for c in person.name)[:20] or "person"
    own = OwnPlan(person.id, person.name, folder, base, data_path, examples)
    try:
        sft = config_from_dict({**SFT_SETTINGS, **(settings or {}), "base_model": str(base.base_dir),
                                "dataset": str(data_path), "start_adapter": start, "name": f"own-{label}",
                                "description": f"{person.name}'s own add-on: their best answers"}).validate()
        own.stages.append(Stage("learn", "Learning from your answers", sft, folder / "learn"))
        if ready.dpo if dpo is None else dpo:
            own.pairs_path = folder / "my-pairs.jsonl"
            own.pairs = export_pairs(store, own.pairs_path, person.id)
            pairs_config = config_from_dict({**DPO_SETTINGS, **(dpo_settings or {}), "base_model": str(base.base_dir),
                                             "dataset": "", "dpo_pairs": str(own.pairs_path),
                                             "start_adapter": str(own.dpo_start), "name": f"own-{label}-prefer",
                                             "description": f"{person.name}'s own add-on: best over worst"})
            own.stages.append(Stage("prefer", "Learning which answers you like least", pairs_config.validate(),
                                    folder / "prefer"))
    except ConfigError as exc:
        raise OwnModelError(f"The settings for learning cannot be used: {exc}") from None
    return own


# -- 5. making it ------------------------------------------------------------------------------------------


def make_model(own: OwnPlan, store=None, cancel: CancelToken | None = None, models_dir: Path | None = None,
               verify: bool = True) -> Iterator[Event]:
    """Run the stages in the child process, export the add-on (GGUF LoRA, checked), add it to the library
    for the person and keep it as their candidate. Done.path is the add-on; Done.data has "candidate",
    "previous" (the add-on they have now, kept), "library_id" and "results" per stage.

    With ``store`` None nothing is recorded: the caller passes the last Done to :func:`keep_candidate` on
    the thread that owns the store (the window runs this on a worker thread).
    """
    from muse_desktop.training.child import run_training
    from muse_desktop.training.export import export_run
    from muse_desktop.training.runfolder import RunFolder
    from muse_desktop.training.stacking import combine_adapters

    results = {}
    total = len(own.stages) + 1
    for number, stage in enumerate(own.stages, start=1):
        yield Progress(number - 1, total, "stages", f"Step {number} of {total}: {stage.words}")
        if stage.name == "prefer":  # on top of MUsE and the first stage's add-on, put together exactly
            first = RunFolder(own.stages[0].run_dir).adapter
            combine_adapters([p for p in (own.base.start_adapter, first) if p], own.dpo_start, own.base.base_dir)
        run = RunFolder(stage.run_dir)
        events = run_training(None, run.path, cancel) if run.resumable else run_training(stage.config, run.path, cancel)
        for event in events:
            if isinstance(event, Done):
                results[stage.name] = event.data
                continue
            yield event
    yield Progress(total - 1, total, "stages", f"Step {total} of {total}: Getting your add-on ready")
    last = own.stages[-1]
    adapter_dir = None
    if last.name == "prefer":  # the person's add-on is both stages' add-ons as one, on top of MUsE
        adapter_dir = combine_adapters([RunFolder(s.run_dir).adapter for s in own.stages], own.folder / "own-adapter",
                                       own.base.base_dir)
    done = None
    for event in export_run(last.run_dir, mode="adapter", models_dir=models_dir, verify=verify, cancel=cancel,
                            adapter_dir=adapter_dir, start_adapter=str(own.base.start_adapter or ""),
                            name=own.stages[0].run_dir.parent.name, base_file=own.base.model_path):
        if isinstance(event, Done):
            done = event
        else:
            yield event
    if done is None:
        raise OwnModelError("The add-on was not made.")
    made = Done(done.message, done.path, {**done.data, "results": results})
    yield Progress(total, total, "stages", "Your add-on is ready")
    if store is None:
        yield made
        return
    yield keep_candidate(store, own, made)


def keep_candidate(store, own: OwnPlan, done: Done) -> Done:
    """Add the exported add-on (make_model's Done) to the library for the person and keep it as their
    candidate, not their default; the Done the window shows."""
    results = done.data.get("results", {})
    name = f"{own.person_name}'s own add-on"
    info = {key: done.data.get(key) for key in ("run", "qtype", "mode", "quant_check", "start_adapter",
                                                "adapter_dir")}
    entry = store.add_to_library(name, "adapter", done.path, done.data["base_path"], "own-model",
                                 {**info, "person": own.person_id, "own": True, "examples": own.examples,
                                  "pairs": own.pairs, "made_on": own.base.model_path,
                                  "muse_add_on": own.base.muse_gguf})
    person = store.profile(own.person_id)
    store.update_profile(own.person_id, settings={**person.settings, CANDIDATE: done.path})
    return Done("Your model is ready. Now try it: you will see answers without names and pick the best.", done.path,
               {"candidate": done.path, "previous": person.adapter_path, "library_id": entry.id,
                "results": results, "person": own.person_id})


def candidate(store, person_id: int) -> str:
    """The add-on made last for the person and not yet accepted or turned down ("" if none)."""
    return str(store.profile(person_id).settings.get(CANDIDATE) or "")


def accept(store, person_id: int, path: str | Path, scale: float = 1.0):
    """Make ``path`` the person's own add-on (people.attach_adapter); the one they had is kept as previous."""
    from muse_desktop.household.people import attach_adapter

    person = store.profile(person_id)
    settings = {k: v for k, v in person.settings.items() if not (k == CANDIDATE and v == str(path))}
    if person.adapter_path and person.adapter_path != str(path):
        settings[PREVIOUS] = person.adapter_path
    attach_adapter(store, person_id, path, scale)
    return store.update_profile(person_id, settings=settings)


def turn_down(store, person_id: int) -> None:
    """Forget the candidate (the blind check kept the add-on they had); its file stays in the library."""
    person = store.profile(person_id)
    store.update_profile(person_id, settings={k: v for k, v in person.settings.items() if k != CANDIDATE})


def person_rows(store, person_id: int) -> list[dict]:
    """The person's questions with their best answers (what the add-on learns; the check asks these)."""
    return [{k: row[k] for k in ("user_type", "question", "answer")} for row in _best_rows(store, person_id)]


__all__ = ["CANDIDATE", "NEEDED_CHOICES", "NEEDED_PAIRS", "OwnModelError", "OwnPlan", "Readiness", "Stage",
           "TrainingBase", "accept", "candidate", "keep_candidate", "make_model", "person_rows", "plan", "readiness", "suggest_more",
           "training_base", "turn_down"]
