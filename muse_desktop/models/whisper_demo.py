"""Write whisper.cpp models with random weights at any shape (self-test, tests, benchmarks).

The file is whisper.cpp's own format (the one its converter writes from OpenAI's
checkpoints): a header of hyper-parameters, the mel filter bank, the vocabulary, then
every tensor by name. Only the weights are random; shapes, names and the filter bank
are the real ones, so the engine runs exactly as it would on a downloaded model.

To make the output checkable, the decoder's position embeddings are set so that it
writes one word a few times and then ends the text (see ``_tensors``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muse_desktop.base.fileio import atomic_path
from muse_desktop.models.random_weights import RandomWeights

GGML_MAGIC = 0x67676D6C
ENGLISH_VOCAB = 51864  # base.en, small.en ...; 51865 and up is multilingual
EOT = 50256  # end of text in the English-only vocabulary


@dataclass(frozen=True)
class Shape:
    n_vocab: int = ENGLISH_VOCAB
    n_audio_ctx: int = 1500  # 30 s of audio after the two convolutions
    n_audio_state: int = 64
    n_audio_head: int = 2
    n_audio_layer: int = 1
    n_text_ctx: int = 448
    n_text_state: int = 64
    n_text_head: int = 2
    n_text_layer: int = 1
    n_mels: int = 80


TINY = Shape()
BASE_EN = Shape(n_audio_state=512, n_audio_head=8, n_audio_layer=6, n_text_state=512, n_text_head=8, n_text_layer=6)
SMALL_EN = Shape(n_audio_state=768, n_audio_head=12, n_audio_layer=12, n_text_state=768, n_text_head=12,
                 n_text_layer=12)


def mel_filters(n_mels: int = 80, n_fft: int = 400, sample_rate: int = 16000) -> np.ndarray:
    """The Slaney-style mel filter bank Whisper uses (librosa's default), [n_mels, n_fft // 2 + 1]."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        mels = f / (200.0 / 3)
        log_region = f >= 1000.0
        return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mels)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        freqs = m * (200.0 / 3)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), freqs)

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    fdiff = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:n_mels + 2] - mel_points[:n_mels]))[:, None]
    return weights.astype(np.float32)


def _tensors(shape: Shape, random: RandomWeights, word_id: int, words: int):
    def r(*dims, scale=0.02):
        return random.normal(*dims, scale=scale, draw=np.float32)

    a, t = shape.n_audio_state, shape.n_text_state
    yield "encoder.positional_embedding", r(shape.n_audio_ctx, a)
    yield "encoder.conv1.weight", r(a, shape.n_mels, 3)
    yield "encoder.conv1.bias", r(a, 1)
    yield "encoder.conv2.weight", r(a, a, 3)
    yield "encoder.conv2.bias", r(a, 1)
    yield "encoder.ln_post.weight", np.ones(a, np.float32)
    yield "encoder.ln_post.bias", np.zeros(a, np.float32)
    # Each decoder position carries one strong, zero-mean direction (far above what the random
    # blocks add): up to position ``words`` it is the chosen word's, then the end-of-text
    # token's. So the model writes the word ``words`` times, then stops, as a real one would.
    half = np.where(np.arange(t) < t // 2, 1.0, -1.0).astype(np.float32)
    alternating = np.where(np.arange(t) % 2 == 0, 1.0, -1.0).astype(np.float32)
    positions = np.stack([half if p <= words else alternating for p in range(shape.n_text_ctx)]) * 40.0
    embedding = r(shape.n_vocab, t)
    embedding[word_id] = half * 0.1
    embedding[EOT] = alternating * 0.1
    yield "decoder.positional_embedding", positions
    yield "decoder.token_embedding.weight", embedding
    yield "decoder.ln.weight", np.ones(t, np.float32)
    yield "decoder.ln.bias", np.zeros(t, np.float32)
    for prefix, n_layer, width, cross in (("encoder", shape.n_audio_layer, a, False),
                                          ("decoder", shape.n_text_layer, t, True)):
        for i in range(n_layer):
            block = f"{prefix}.blocks.{i}."
            yield block + "mlp_ln.weight", np.ones(width, np.float32)
            yield block + "mlp_ln.bias", np.zeros(width, np.float32)
            yield block + "mlp.0.weight", r(4 * width, width)
            yield block + "mlp.0.bias", r(4 * width)
            yield block + "mlp.2.weight", r(width, 4 * width)
            yield block + "mlp.2.bias", r(width)
            for attn in ("attn", "cross_attn") if cross else ("attn",):
                yield block + f"{attn}_ln.weight", np.ones(width, np.float32)
                yield block + f"{attn}_ln.bias", np.zeros(width, np.float32)
                yield block + f"{attn}.query.weight", r(width, width)
                yield block + f"{attn}.query.bias", r(width)
                yield block + f"{attn}.key.weight", r(width, width)
                yield block + f"{attn}.value.weight", r(width, width)
                yield block + f"{attn}.value.bias", r(width)
                yield block + f"{attn}.out.weight", r(width, width)
                yield block + f"{attn}.out.bias", r(width)


def write_model(path: Path, shape: Shape = TINY, word: str = " hello", seed: int = 0, f16: bool = True,
                words: int = 2) -> Path:
    """Write a random-weight whisper.cpp model to ``path`` that writes ``word`` ``words`` times, whatever it hears."""
    random = RandomWeights(seed)
    word_id = 100
    # Byte-level tokens as in GPT-2's vocabulary: real ids, short placeholder texts.
    tokens = [word.encode() if i == word_id else bytes([33 + i % 90]) for i in range(50256)]
    tokens[220] = b" "  # whisper.cpp looks the blank up by its text
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(struct.pack("i", GGML_MAGIC))
        for value in (shape.n_vocab, shape.n_audio_ctx, shape.n_audio_state, shape.n_audio_head,
                      shape.n_audio_layer, shape.n_text_ctx, shape.n_text_state, shape.n_text_head,
                      shape.n_text_layer, shape.n_mels, 1 if f16 else 0):
            out.write(struct.pack("i", value))
        filters = mel_filters(shape.n_mels)
        out.write(struct.pack("ii", *filters.shape))
        out.write(filters.tobytes())
        out.write(struct.pack("i", len(tokens)))
        for token in tokens:
            out.write(struct.pack("i", len(token)))
            out.write(token)
        for name, data in _tensors(shape, random, word_id, words):
            keep_f32 = data.ndim < 2 or name.endswith(("conv1.bias", "conv2.bias", "positional_embedding"))
            if f16 and not keep_f32:
                data, ftype = data.astype(np.float16), 1
            else:
                ftype = 0
            encoded = name.encode()
            out.write(struct.pack("iii", data.ndim, len(encoded), ftype))
            for dim in reversed(data.shape):
                out.write(struct.pack("i", dim))
            out.write(encoded)
            out.write(np.ascontiguousarray(data).tobytes())
    return path
