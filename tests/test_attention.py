"""The `attention onednn-graph` setting (core/attention.py): oneDNN Graph's fused attention, row by row at
bucketed lengths, against torch's SDPA; its fallbacks; and the model core and the server running it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from bge_m3_triton.core import attention

HEADS, HEAD_DIM = 2, 16  # the tiny checkpoint's layout


def fused_or_skip(dtype: torch.dtype) -> None:
    try:
        attention.prepare(HEADS, HEAD_DIM, dtype)
    except RuntimeError as exc:  # e.g. bf16 on a CPU without native bf16 (README: Performance)
        pytest.skip(str(exc))


def padded(lengths: list[int], dtype: torch.dtype, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Query, key and value for rows of `lengths` tokens, right-padded, and transformers' boolean mask."""
    tokens = max(lengths)
    generator = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(len(lengths), HEADS, tokens, HEAD_DIM, generator=generator).to(dtype) for _ in range(3)]
    keep = torch.arange(tokens)[None, :] < torch.tensor(lengths)[:, None]
    return qkv, keep[:, None, None, :].expand(len(lengths), 1, tokens, tokens)


def fused_run(*args: torch.Tensor | None) -> torch.Tensor:
    """The attention as the model runs it (without gradients)."""
    with torch.inference_mode():
        return attention.attention_forward(module(), *args)[0]


def sdpa_run(*args: torch.Tensor | None) -> torch.Tensor:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.inference_mode():
        return sdpa_attention_forward(module(), *args)[0]  # type: ignore[arg-type]


def module() -> torch.nn.Module:
    made = torch.nn.Module()
    made.is_causal = False  # type: ignore[assignment]
    return made


def test_buckets_cover_every_fused_length() -> None:
    lengths = attention.buckets()
    assert lengths[0] == attention.MIN_TOKENS and lengths[-1] == attention.MAX_TOKENS and len(lengths) == 37
    for tokens in range(attention.MIN_TOKENS, attention.MAX_TOKENS + 1):
        assert tokens <= attention.bucket(tokens) in lengths
        assert attention.bucket(tokens) - tokens < max(16, tokens // 8)  # at most 1/8 wasted past 256


def test_lengths_are_read_only_from_a_right_padded_padding_mask() -> None:
    _, mask = padded([5, 3, 8], torch.float32)
    assert attention._prefix_lengths(mask, 3, 8) == [5, 3, 8]
    assert attention._prefix_lengths(mask.flip(-1), 3, 8) is None  # left padding
    assert attention._prefix_lengths(mask.float(), 3, 8) is None  # an additive mask
    causal = mask & torch.ones(8, 8, dtype=torch.bool).tril()
    assert attention._prefix_lengths(causal, 3, 8) is None  # keys differ by query


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_attention_matches_sdpa_and_ignores_the_batch(dtype: torch.dtype) -> None:
    """Rows of 30 (SDPA alone), 64, 100 and 200 tokens (fused at buckets 64, 112, 208) in one padded batch:
    each row's output is SDPA's within the dtype's rounding, padding positions are zeros, and each row gives
    the same bits alone as inside the batch, on every call."""
    fused_or_skip(dtype)
    lengths = [200, 100, 64, 30]
    qkv, mask = padded(lengths, dtype)
    fused, expected = fused_run(*qkv, mask), sdpa_run(*qkv, mask)
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    for row, count in enumerate(lengths):
        torch.testing.assert_close(fused[row, :count].float(), expected[row, :count].float(), atol=tolerance, rtol=0)
        assert not fused[row, count:].any()
        q, k, v = (t[row:row + 1, :, :count] for t in qkv)
        assert torch.equal(fused_run(q, k, v, None)[0], fused[row, :count])
    assert torch.equal(fused_run(*qkv, mask), fused)


def test_what_the_fused_graph_does_not_take_runs_sdpa() -> None:
    """Gradients, a mask that is not right padding, and batches under 64 tokens take transformers' SDPA."""
    fused_or_skip(torch.float32)
    qkv, mask = padded([100, 80], torch.float32)
    assert fused_run(*qkv, mask)[1, 80:].abs().sum() == 0  # fused: padding positions left at zero
    assert torch.equal(fused_run(*qkv, mask.flip(-1)), sdpa_run(*qkv, mask.flip(-1)))
    short, short_mask = padded([40, 20], torch.float32)
    assert torch.equal(fused_run(*short, short_mask), sdpa_run(*short, short_mask))
    grads = [t.clone().requires_grad_() for t in qkv]
    output, _ = attention.attention_forward(module(), *grads, mask)
    assert output.requires_grad and output[1, 80:].abs().sum() > 0
    one_head = [t[:, :1] for t in qkv]  # no graph traced for one head
    assert torch.equal(fused_run(*one_head, mask), sdpa_run(*one_head, mask))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_model_core_runs_it_within_rounding_of_sdpa(m3_checkpoint: Path, dtype: str) -> None:
    import numpy as np
    from reference import TEXTS

    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings

    fused_or_skip(getattr(torch, dtype))
    texts = [*TEXTS, " ".join(["a passage of moderate length"] * 30)]
    settings = ModelSettings(model=str(m3_checkpoint), dtype=dtype, device="cpu", attention="onednn-graph",
                             compile="off", engine="torch")
    model = M3Model.load(settings)
    assert model.encoder.config._attn_implementation == attention.NAME
    fused = model.encode(texts, [8192] * len(texts))
    model.encoder.set_attn_implementation("sdpa")
    plain = model.encode(texts, [8192] * len(texts))
    bound = 1e-6 if dtype == "float32" else 2e-4
    for a, b in zip(fused, plain):
        assert 1 - float(np.dot(a.dense, b.dense)) < bound
        assert 1 - float((a.colbert * b.colbert).sum(-1).min()) < 10 * bound


def test_loading_keeps_sdpa_where_the_graph_does_not_fuse(m3_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings

    def refuse(*_: object) -> None:
        raise RuntimeError("oneDNN Graph does not fuse torch.float16 attention on this CPU")

    monkeypatch.setattr(attention, "_GRAPHS", {})
    monkeypatch.setattr(attention, "FusedAttention", refuse)
    with caplog.at_level(logging.WARNING):
        model = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="float32", device="cpu",
                                           attention="onednn-graph"))
    assert model.encoder.config._attn_implementation == "sdpa"
    assert "does not fuse" in caplog.text
