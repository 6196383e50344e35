"""The encoder's self-attention on CPUs: torch's SDPA, or oneDNN Graph's fused attention (`onednn-graph`).

Why: on CPUs without AMX, torch's CPU flash-attention kernel does its bf16 GEMMs with MKL's
`GEMM_BF16BF16F32`, which on AMD EPYC runs at a fraction of oneDNN's bf16 kernels; oneDNN Graph's fused
attention (TorchScript's LLGA fuser) ran 1.4-2.2x faster at the server's bf16 shapes. In fp32 the model ran
no faster with it, nor with AMX, so `auto` takes it for bf16 on CPUs without AMX only
(docs/decisions/005-fused-attention.md).

How, for a right-padded padding mask (what the encoder gets; anything else goes to SDPA): every row
is attended alone, over its own tokens, so a text's attention does not depend on the others in its
batch. A row of `MIN_TOKENS` to `MAX_TOKENS` tokens runs the fused graph at its length rounded up to a
bucket (the extra keys masked): a fixed set of 37 shapes, each compiled on first use and kept. Shorter
and longer rows run SDPA alone; a batch whose rows are all short runs SDPA as usual. Padding positions
get zeros (their outputs are never read).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import torch

NAME = "bge_m3_onednn_graph"  # registered with transformers' attention and mask interfaces
MIN_TOKENS, MAX_TOKENS = 64, 2048
_LOCK = threading.RLock()
_GRAPHS: dict[tuple[int, int, torch.dtype, float], FusedAttention] = {}
_LAST_MASK = threading.local()  # every layer of a forward pass gets the same mask: read its lengths once


def bucket(tokens: int) -> int:
    """`tokens` rounded up to the next bucket: steps of 16 below 256, then eight steps per doubling."""
    step = max(16, 1 << (tokens.bit_length() - 4))
    return -(-tokens // step) * step


def buckets() -> list[int]:
    """Every length the fused graph runs at."""
    lengths, tokens = [], MIN_TOKENS
    while tokens <= MAX_TOKENS:
        lengths.append(bucket(tokens))
        tokens = lengths[-1] + 1
    return sorted(set(lengths))


class _Scored(torch.nn.Module):
    """softmax(q k^T * scale + bias) v in plain ops: the pattern oneDNN Graph fuses."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale + bias
        return torch.matmul(torch.softmax(scores, dim=-1), v)


class FusedAttention:
    """The traced pattern for one head layout, dtype and scale, run on one row at a bucket length.

    TorchScript runs a shape it has not seen unfused first, then compiles it; so a bucket's first call
    runs twice and keeps the second (fused) result, and the same text always gets the same numbers.
    Compiled shapes stay for the life of the process (~2.5 MB each), hence the fixed buckets."""

    def __init__(self, heads: int, head_dim: int, dtype: torch.dtype, scale: float) -> None:
        self.dtype = dtype
        self.compiled: set[int] = set()
        torch.jit.enable_onednn_fusion(True)
        # A static specialization per bucket, with room to spare: past the count TorchScript would run
        # new shapes unfused.
        torch.jit.set_fusion_strategy([("STATIC", 2 * len(buckets()))])
        with torch.inference_mode():
            example = torch.randn(1, heads, MIN_TOKENS, head_dim).to(dtype)
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                _Scored(scale).eval(), (example, example, example, _bias(MIN_TOKENS, MIN_TOKENS, dtype)))
            self.graph = torch.jit.freeze(traced)
            self.run(example, example, example, MIN_TOKENS)
            if "oneDNNFusionGroup" not in str(torch._C._last_executed_optimized_graph()):
                raise RuntimeError(f"oneDNN Graph does not fuse {dtype} attention on this CPU")

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: int) -> torch.Tensor:
        """Attention of one row's `tokens` tokens ([1, heads, tokens, head dim] each), at its bucket."""
        length = bucket(tokens)
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, length - tokens)).contiguous() for t in (q, k, v))
        bias = _bias(tokens, length, self.dtype)
        if length not in self.compiled:
            with _LOCK:
                self.graph(q, k, v, bias)
                self.compiled.add(length)
        return self.graph(q, k, v, bias)[:, :, :tokens]  # type: ignore[no-any-return]


def prepare(heads: int, head_dim: int, dtype: torch.dtype) -> None:
    """Register the attention with transformers and trace the fused graph for this head layout and dtype
    (once per process and layout); raises if oneDNN Graph does not fuse it here."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    key = (heads, head_dim, dtype, head_dim ** -0.5)
    with _LOCK:
        if key not in _GRAPHS:
            _GRAPHS[key] = FusedAttention(*key)
    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


@functools.lru_cache(maxsize=4 * MAX_TOKENS)
def _bias(tokens: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive mask hiding keys `tokens` to `length` (made once per row length; every layer reuses it)."""
    bias = torch.zeros(1, 1, 1, length, dtype=dtype)
    bias[..., tokens:] = torch.finfo(dtype).min
    return bias


def _lengths(mask: torch.Tensor | None, rows: int, tokens: int) -> list[int] | None:
    """Each row's token count (see `_prefix_lengths`); no mask: every row is full."""
    if mask is None:
        return [tokens] * rows
    if getattr(_LAST_MASK, "mask", None) is mask:
        return _LAST_MASK.lengths  # type: ignore[no-any-return]
    _LAST_MASK.mask, _LAST_MASK.lengths = mask, _prefix_lengths(mask, rows, tokens)
    return _LAST_MASK.lengths  # type: ignore[no-any-return]


def _prefix_lengths(mask: torch.Tensor, rows: int, tokens: int) -> list[int] | None:
    """Each row's token count from transformers' boolean SDPA mask, or None if it is not a right-padded
    padding mask (the same keys for every query, a prefix of each row)."""
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[-1] != tokens or mask.shape[1] != 1:
        return None
    keep = mask[:, 0, 0, :]
    if keep.shape[0] != rows or not bool((mask == keep[:, None, None, :]).all()):
        return None
    counts = keep.sum(-1)
    if not torch.equal(keep, torch.arange(tokens)[None, :] < counts[:, None]):
        return None
    return counts.tolist()


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: query, key, value [rows, heads, tokens, head dim]; returns the
    output as [rows, tokens, heads, head dim]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows, heads, tokens, head_dim = query.shape
    scale = scaling if scaling is not None else head_dim ** -0.5
    graph = _GRAPHS.get((heads, head_dim, query.dtype, scale))
    usable = (graph is not None and query.device.type == "cpu" and not torch.is_grad_enabled() and not dropout
              and not is_causal and not kwargs.get("output_attentions") and tokens >= MIN_TOKENS
              and key.shape == query.shape and value.shape == query.shape)
    lengths = _lengths(attention_mask, rows, tokens) if usable else None
    if graph is None or lengths is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    output = query.new_zeros(rows, tokens, heads, head_dim)
    for row, count in enumerate(lengths):
        q, k, v = (t[row:row + 1, :, :count] for t in (query, key, value))
        if MIN_TOKENS <= count <= MAX_TOKENS:
            attended = graph.run(q, k, v, count)
        else:
            attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
        output[row, :count] = attended[0].transpose(0, 1)
    return output, None
