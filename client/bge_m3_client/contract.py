"""The tensor contract between the Triton models and the client: names, dtypes, parameters.

The models (server side) import this module too, so both sides read one definition.

Embed model (`bge_m3`), for a request of n texts:

| tensor | dtype | shape | holds |
|---|---|---|---|
| TEXT (input) | BYTES | [n, 1] | UTF-8 texts |
| DENSE | FP32 (or `dense_format`'s) | [n, dim] | CLS vectors, L2-normalized |
| DENSE_SCALE | FP32 | [n, 1] | each dense vector's scale, with `dense_format` int8 or uint8 only |
| SPARSE_INDICES | INT32 | [total] | token ids, ascending within each text, texts concatenated |
| SPARSE_VALUES | FP32 | [total] | their weights |
| SPARSE_LENGTHS | INT32 | [n, 1] | how many ids each text has |
| COLBERT | FP32 (or `colbert_format`'s) | [vectors, colbert_dim] | ColBERT vectors, L2-normalized, texts concatenated |
| COLBERT_LENGTHS | INT32 | [n, 1] | vectors per text (its tokens - 1) |
| COLBERT_SCALE | FP32 | [vectors, 1] | each ColBERT vector's scale, with `colbert_format` int8 or uint8 only |
| TOKENS | INT32 | [n, 1] | tokens per text after truncation, `<s>` and `</s>` included |
| TRUNCATED | BOOL | [n, 1] | whether the text lost tokens to the max length |
| TOKEN_IDS | INT32 | [total] | every token id after truncation, texts concatenated (TOKENS per text) |
| TOKEN_SPANS | INT32 | [total, 2] | [start, stop) character offsets of each token; -1, -1 for special tokens |

Only the outputs a request asks for are computed (none named: every output but TOKEN_IDS and
TOKEN_SPANS, which come only when named). A request that names none of DENSE, SPARSE_* and
COLBERT* runs no forward pass (tokenization only). Request parameters:
`mode` ("query" | "passage", default "query") picks the default max length; `max_length` (int)
overrides it, up to the model's position limit; `dense_format` and `colbert_format` (`formats.FORMATS`,
default "float32") pick the numeric format DENSE and COLBERT travel in: FP16, INT8 or UINT8 tensors
(their width d / 8 for the packed binary formats), whatever config.pbtxt declares, which Triton's Python
backend does not enforce (bge_m3_client/formats.py defines each).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

EMBED_MODEL = "bge_m3"
RERANK_MODEL = "bge_m3_rerank"
CROSS_ENCODER_MODEL = "bge_reranker"

TEXT = "TEXT"
DENSE = "DENSE"
DENSE_SCALE = "DENSE_SCALE"
SPARSE_INDICES = "SPARSE_INDICES"
SPARSE_VALUES = "SPARSE_VALUES"
SPARSE_LENGTHS = "SPARSE_LENGTHS"
COLBERT = "COLBERT"
COLBERT_LENGTHS = "COLBERT_LENGTHS"
COLBERT_SCALE = "COLBERT_SCALE"
TOKENS = "TOKENS"
TRUNCATED = "TRUNCATED"
TOKEN_IDS = "TOKEN_IDS"
TOKEN_SPANS = "TOKEN_SPANS"

EMBED_OUTPUTS: dict[str, str] = {
    DENSE: "FP32", DENSE_SCALE: "FP32", SPARSE_INDICES: "INT32", SPARSE_VALUES: "FP32", SPARSE_LENGTHS: "INT32",
    COLBERT: "FP32", COLBERT_LENGTHS: "INT32", COLBERT_SCALE: "FP32", TOKENS: "INT32", TRUNCATED: "BOOL",
    TOKEN_IDS: "INT32", TOKEN_SPANS: "INT32",
}
FORMATTED_OUTPUTS = (DENSE, COLBERT)  # their dtype is the request's format's, not EMBED_OUTPUTS'
OUTPUT_GROUPS: dict[str, tuple[str, ...]] = {
    "dense": (DENSE, DENSE_SCALE),
    "sparse": (SPARSE_INDICES, SPARSE_VALUES, SPARSE_LENGTHS),
    "colbert": (COLBERT, COLBERT_LENGTHS, COLBERT_SCALE),
}
ALWAYS_OUTPUTS = (TOKENS, TRUNCATED)
TOKENIZATION_OUTPUTS = (TOKEN_IDS, TOKEN_SPANS)
DEFAULT_OUTPUTS = tuple(name for name in EMBED_OUTPUTS if name not in TOKENIZATION_OUTPUTS)

MAX_TOKENS = 8192  # BGE-M3's (XLM-R's) longest input in tokens: the bound of every length parameter
PARAM_MODE = "mode"
PARAM_DENSE_FORMAT = "dense_format"
PARAM_COLBERT_FORMAT = "colbert_format"
PARAM_MAX_LENGTH = "max_length"
MODES = ("query", "passage")

# Rerank models: one row per (query, passage) pair.
QUERY = "QUERY"
PASSAGE = "PASSAGE"
SCORES = "SCORES"  # bge_m3_rerank: FP32 [n, 5], columns in SCORE_COLUMNS order
SCORE_COLUMNS = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
COMBINED_SCORE = SCORE_COLUMNS[-1]  # the score `rerank` ranks by
SCORE = "SCORE"  # bge_reranker: FP32 [n, 1]
PARAM_WEIGHTS = ("dense_weight", "sparse_weight", "colbert_weight")
DEFAULT_WEIGHTS = (0.4, 0.2, 0.4)
PARAM_MAX_QUERY_LENGTH = "max_query_length"
PARAM_MAX_PASSAGE_LENGTH = "max_passage_length"
PARAM_NORMALIZE = "normalize"

# Model configuration parameters both sides read (config.pbtxt `parameters`).
CONFIG_QUERY_MAX_LENGTH = "query_max_length"
CONFIG_PASSAGE_MAX_LENGTH = "passage_max_length"
CONFIG_DTYPE = "dtype"
CONFIG_CHECKPOINT = "model"


def config_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """A model configuration's `parameters` (Triton's JSON form) as plain strings."""
    raw = config.get("parameters", {}) or {}
    return {key: value.get("string_value", "") if isinstance(value, Mapping) else str(value)
            for key, value in raw.items()}


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """The rule for (dense, sparse, colbert) weights, on both sides of the wire: three finite,
    non-negative numbers whose dense + sparse part is positive (the sparse+dense score divides by it).

    Raises ValueError with the reason.
    """
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be three numbers (dense, sparse, colbert), got {weights!r}") from None
    if len(values) != 3 or not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f"weights must be three finite non-negative numbers (dense, sparse, colbert), "
                         f"got {list(weights)}")
    if values[0] + values[1] <= 0:
        raise ValueError(f"dense_weight + sparse_weight must be positive (the sparse+dense score divides by "
                         f"it), got {list(weights)}")
    return values[0], values[1], values[2]


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What a client needs from a served model's configuration: its batch and length limits, and the
    checkpoint it serves."""

    max_batch_size: int
    query_max_length: int | None
    passage_max_length: int | None
    checkpoint: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ServedModel:
        """Read a model configuration as Triton returns it (JSON)."""
        params = config_parameters(config)

        def number(key: str) -> int | None:
            raw = params.get(key, "").strip()
            return int(raw) if raw.isdigit() else None

        return cls(int(config.get("max_batch_size", 0) or 0), number(CONFIG_QUERY_MAX_LENGTH),
                   number(CONFIG_PASSAGE_MAX_LENGTH), params.get(CONFIG_CHECKPOINT) or None)

    def max_length(self, is_passage: bool) -> int | None:
        """The default max length of a query or a passage, when the config states it."""
        return self.passage_max_length if is_passage else self.query_max_length
