"""Vectorized BGE-M3 heads' post-processing: sparse lexical weights and ColBERT vectors.

Both work on a whole padded sub-batch at once and return flat ("ragged") results in row order
with per-row counts, which is the layout the Triton outputs use.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def sparse_weights(
    token_weights: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
    unused_ids: Iterable[int], vocab_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the max weight of each distinct token id, special ids and zero weights dropped.

    `token_weights` is `[rows, length]` (already ReLU'd). Returns `(counts [rows], ids, weights)`
    with ids ascending within each row, exactly as FlagEmbedding's lexical weights.
    """
    keep = attention_mask.bool() & (token_weights > 0)
    for token_id in unused_ids:
        keep &= input_ids != token_id
    rows = torch.nonzero(keep, as_tuple=True)[0]
    keys = rows * vocab_size + input_ids[keep]
    unique_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    values = torch.zeros(unique_keys.shape[0], dtype=token_weights.dtype)
    values = values.scatter_reduce(0, inverse, token_weights[keep], reduce="amax", include_self=False)
    counts = torch.bincount(unique_keys // vocab_size, minlength=token_weights.shape[0])
    return counts, unique_keys % vocab_size, values


def colbert_vectors(projected: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalized float32 vectors of every real token after `<s>`: `n - 1` per row of `n` tokens.

    `projected` is `colbert_linear(hidden[:, 1:])`, `[rows, length - 1, dim]`, in any float dtype. Returns
    `(counts [rows], vectors [sum(counts), dim])` in row order. The padding is dropped before the
    conversion to float32 and the division happens in place (the values are those of
    `torch.nn.functional.normalize`): a 32-passage request's 33 MB are written once, not three times.
    """
    mask = attention_mask[:, 1:].bool()
    vectors = projected[mask].float()
    return mask.sum(dim=1), vectors.div_(vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12))
