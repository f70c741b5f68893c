"""The before/after evaluation: "before" answers really come from the base model, "after" from the tuned one."""

from __future__ import annotations

from test_training import tiny_config, write_triples


def test_before_answers_are_the_base_models_and_after_answers_the_tuned_ones(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from muse_desktop.training.evaluate import answer
    from muse_desktop.training.recipe import train

    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl"), validation_split=0.34, eval_questions=2,
                         eval_max_new_tokens=12, max_steps=30)
    rows = list(train(config, tmp_path / "run"))[-1].data["evaluation"]["rows"]
    assert len(rows) == 2
    # The base model on its own, loaded fresh: the "before" answers must be exactly its greedy answers.
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    for row in rows:
        alone = answer(base, tokenizer, row["user_type"] or None, row["question"], None, 12, torch.device("cpu"))
        assert row["base"] == alone, row
    assert any(row["tuned"] != row["base"] for row in rows)  # training changed what the model says
