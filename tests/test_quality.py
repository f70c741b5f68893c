"""The quantized file is checked against its F16 original, and the result reaches the person and the library."""

from __future__ import annotations

import numpy as np
import torch

from converters.convert import convert_model
from converters.quality import CHECK_CONVERSATIONS, check_ids, compare_distributions, compare_quantized
from converters.quantize import quantize
from muse_desktop.models.demo_model import Variant, build_demo_model
from muse_desktop.base.events import Done


def run(events):
    *_, last = list(events)
    assert isinstance(last, Done)
    return last


def test_kl_and_agreement_match_an_independent_computation():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(7, 50)) * 3, rng.normal(size=(7, 50)) * 3
    agree, kl = compare_distributions(p, q)
    expected = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(q), -1), torch.log_softmax(torch.tensor(p), -1),
                                          log_target=True, reduction="none").sum(-1).numpy()
    np.testing.assert_allclose(kl, expected, rtol=1e-9, atol=1e-12)
    assert agree == float((p.argmax(-1) == q.argmax(-1)).mean())
    same_agree, same_kl = compare_distributions(p, p)
    assert same_agree == 1.0 and np.abs(same_kl).max() < 1e-12


def test_check_prompts_are_muse_conversations_through_the_contract(tiny_gguf):
    sequences = check_ids(tiny_gguf[Variant.MINI_4K])
    assert len(sequences) == len(CHECK_CONVERSATIONS)
    assert all(len(ids) > 20 for ids in sequences)


def test_quantized_file_close_to_f16_and_a_different_model_far(tiny_model, tmp_path, tiny_sp_model):
    f16, q8 = tmp_path / "f16.gguf", tmp_path / "q8.gguf"
    run(convert_model(tiny_model, f16, "f16"))
    run(quantize(f16, q8, "Q8_0"))
    close = compare_quantized(f16, q8, "Q8_0")
    assert close.n_tokens > 100 and close.top1_agreement > 0.9 and close.mean_kl < 0.01, close.summary()
    # Other weights (another seed) must look far apart: the check can fail.
    other_dir = build_demo_model(tmp_path / "other", Variant.MINI_4K, seed=7, tokenizer_model=tiny_sp_model)
    other = tmp_path / "other.gguf"
    run(convert_model(other_dir, other, "f16"))
    far = compare_quantized(f16, other, "F16")
    assert far.mean_kl > 20 * max(close.mean_kl, 1e-4) and far.top1_agreement < close.top1_agreement, far.summary()
    assert "Q8_0 against F16" in close.summary()
