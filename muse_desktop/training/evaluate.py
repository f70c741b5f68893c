"""Before/after evaluation: held-out questions answered by the base and the tuned model.

Answers are greedy, generated from the same prompt-contract ids the chat uses. Each
answer is scored against the dataset's reference with BLEU (sacrebleu) and for
reading level with the Flesch-Kincaid grade (textstat); scores are summarised per
user type, the way MUsE compares answers for a child, a psychologist and a senior.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from muse_desktop.base.prompting.contract import Role, Special, Turn, build_pieces, encode
from muse_desktop.base.prompting.hf import HFTokenizer


@torch.no_grad()
def answer(model, tokenizer, user_type: str | None, question: str, template, max_new_tokens: int, device) -> str:
    wrapped = HFTokenizer(tokenizer)
    ids = encode(build_pieces(user_type, [Turn(Role.USER, question)], template, add_generation_prompt=True),
                 wrapped).input_ids
    stops = [wrapped.special_id(Special.END)]
    if tokenizer.eos_token_id is not None:
        stops.append(tokenizer.eos_token_id)
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=torch.tensor([ids], device=device), attention_mask=torch.ones(1, len(ids),
                         dtype=torch.long, device=device), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=stops, pad_token_id=stops[-1])
    if was_training:
        model.train()
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


def grade(text: str) -> float | None:
    """Flesch-Kincaid grade of ``text`` (None when there are no words to grade)."""
    import textstat

    if not any(ch.isalpha() for ch in text):
        return None
    return float(textstat.flesch_kincaid_grade(text))


def before_after(model, tokenizer, items, config, device) -> dict:
    """Answers and scores for (user type, question, reference) items, base vs tuned."""
    import sacrebleu

    template = config.instruction_template or None
    rows = []
    for user_type, question, reference in items:
        tuned = answer(model, tokenizer, user_type, question, template, config.eval_max_new_tokens, device)
        with model.disable_adapter():
            base = answer(model, tokenizer, user_type, question, template, config.eval_max_new_tokens, device)
        rows.append({
            "user_type": user_type or "",
            "question": question,
            "reference": reference,
            "base": base,
            "tuned": tuned,
            "bleu_base": sacrebleu.sentence_bleu(base, [reference]).score,
            "bleu_tuned": sacrebleu.sentence_bleu(tuned, [reference]).score,
            "grade_base": grade(base),
            "grade_tuned": grade(tuned),
        })
    by_type: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_type[row["user_type"]].append(row)
    summary = {}
    for user_type, group in sorted(by_type.items()):
        refs = [[r["reference"] for r in group]]
        grades = {k: [r[f"grade_{k}"] for r in group if r[f"grade_{k}"] is not None] for k in ("base", "tuned")}
        summary[user_type or "(none)"] = {
            "n": len(group),
            "bleu_base": sacrebleu.corpus_bleu([r["base"] for r in group], refs).score,
            "bleu_tuned": sacrebleu.corpus_bleu([r["tuned"] for r in group], refs).score,
            "grade_base": sum(grades["base"]) / len(grades["base"]) if grades["base"] else None,
            "grade_tuned": sum(grades["tuned"]) / len(grades["tuned"]) if grades["tuned"] else None,
        }
    return {"rows": rows, "by_user_type": summary}
