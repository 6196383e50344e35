"""Decoding the models' output tensors into per-text results."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bge_m3_client import contract as c
from bge_m3_client import formats


@dataclasses.dataclass
class EmbeddingResult:
    """One text's outputs. `sparse` is Qdrant-ready: `{"indices": [...], "values": [...]}`, indices ascending.
    `dense` and `colbert` are in the format asked for (`formats`: float32 by default); the int8 and uint8
    formats come with their scales (`dense_float()` and `colbert_float()` give float32 back)."""

    dense: np.ndarray | None
    sparse: dict[str, list[Any]] | None
    colbert: np.ndarray | None
    tokens: int
    truncated: bool
    dense_format: str = formats.FLOAT32
    colbert_format: str = formats.FLOAT32
    dense_scale: float | None = None
    colbert_scale: np.ndarray | None = None  # [vectors, 1]

    def dense_float(self) -> np.ndarray | None:
        """The dense vector as float32, decoded from its format (signs, +1/-1, for the binary ones)."""
        if self.dense is None:
            return None
        return formats.decode(self.dense, self.dense_format, self.dense_scale)

    def colbert_float(self) -> np.ndarray | None:
        """The ColBERT vectors as float32, decoded from their format."""
        if self.colbert is None:
            return None
        return formats.decode(self.colbert, self.colbert_format, self.colbert_scale)

    def lexical_weights(self) -> dict[str, float]:
        """The sparse output in FlagEmbedding's `{"token_id": weight}` form."""
        if self.sparse is None:
            return {}
        return {str(i): float(v) for i, v in zip(self.sparse["indices"], self.sparse["values"])}


@dataclasses.dataclass
class TokenizedText:
    """One text as the served model tokenizes it: ids, and each token's `[start, stop)` character
    offsets in the text, `(-1, -1)` for special tokens (`<s>`, `</s>`)."""

    ids: list[int]
    spans: list[tuple[int, int]]
    truncated: bool

    @property
    def special(self) -> list[bool]:
        """Whether each token is a special token."""
        return [start < 0 for start, _ in self.spans]


def decode_tokenized(outputs: dict[str, np.ndarray], count: int) -> list[TokenizedText]:
    """Split a tokenization response (TOKEN_IDS, TOKEN_SPANS, TOKENS, TRUNCATED) into `count` texts."""
    lengths = outputs[c.TOKENS].reshape(-1).astype(np.int64)
    if lengths.shape[0] != count:
        raise ValueError(f"{c.TOKENS} has {lengths.shape[0]} entries for {count} texts")
    bounds = np.concatenate(([0], np.cumsum(lengths)))
    ids, spans = outputs[c.TOKEN_IDS].reshape(-1), outputs[c.TOKEN_SPANS].reshape(-1, 2)
    truncated = outputs[c.TRUNCATED].reshape(-1)
    return [TokenizedText(ids=ids[bounds[i]:bounds[i + 1]].tolist(),
                          spans=[(int(a), int(b)) for a, b in spans[bounds[i]:bounds[i + 1]]],
                          truncated=bool(truncated[i])) for i in range(count)]


def decode_embeddings(outputs: dict[str, np.ndarray], count: int, dense_format: str = formats.FLOAT32,
                      colbert_format: str = formats.FLOAT32) -> list[EmbeddingResult]:
    """Split one response's tensors into `count` results (dense and ColBERT in the formats they were asked in)."""
    dense = outputs.get(c.DENSE)
    dense_scale = outputs.get(c.DENSE_SCALE)
    sparse = split_ragged(outputs, c.SPARSE_LENGTHS, (c.SPARSE_INDICES, c.SPARSE_VALUES), count)
    colbert_names = (c.COLBERT, c.COLBERT_SCALE) if c.COLBERT_SCALE in outputs else (c.COLBERT,)
    colbert = split_ragged(outputs, c.COLBERT_LENGTHS, colbert_names, count)
    tokens = outputs.get(c.TOKENS)
    truncated = outputs.get(c.TRUNCATED)
    results = []
    for i in range(count):
        results.append(EmbeddingResult(
            dense=None if dense is None else dense[i],
            sparse=None if sparse is None else {"indices": sparse[i][0].tolist(), "values": sparse[i][1].tolist()},
            colbert=None if colbert is None else colbert[i][0],
            tokens=0 if tokens is None else int(tokens.reshape(-1)[i]),
            truncated=False if truncated is None else bool(truncated.reshape(-1)[i]),
            dense_format=dense_format, colbert_format=colbert_format,
            dense_scale=None if dense_scale is None else float(dense_scale.reshape(-1)[i]),
            colbert_scale=None if colbert is None or len(colbert[i]) < 2 else colbert[i][1],
        ))
    return results


def split_ragged(outputs: dict[str, np.ndarray], lengths_name: str, names: tuple[str, ...],
                 count: int) -> list[tuple[np.ndarray, ...]] | None:
    """Split flat tensors `names` by the per-text counts in `lengths_name`; None when absent."""
    if lengths_name not in outputs or any(name not in outputs for name in names):
        return None
    lengths = outputs[lengths_name].reshape(-1).astype(np.int64)
    if lengths.shape[0] != count:
        raise ValueError(f"{lengths_name} has {lengths.shape[0]} entries for {count} texts")
    bounds = np.concatenate(([0], np.cumsum(lengths)))
    return [tuple(outputs[name][bounds[i]:bounds[i + 1]] for name in names) for i in range(count)]
