"""An in-memory stand-in for the three served models, over the client's `FakeTransport`.

It answers the tensors the contract defines (small widths: DENSE and COLBERT of 8), checks request
parameters as the real models do (unknown names, modes, length ranges, the weight rule) and refuses
them with Triton's status codes, so the client and the gateway can be tested in-process, without a
server. Tokens are words: a text of w words has w + 2 tokens, cut at the max length; token ids are
stable per word. The numbers mean nothing; shapes, dtypes and errors are the real ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from bge_m3_client import contract as c
from bge_m3_client import formats
from bge_m3_client.testing import AsyncFakeTransport, FakeTransport, StatusError
from bge_m3_client.transport import Call

WIDTH = 8
QUERY_MAX, PASSAGE_MAX, CROSS_MAX = 512, 8192, 512
MAX_BATCH = 64
WORD = re.compile(r"\S+")


def config(max_length_query: int = QUERY_MAX, max_length_passage: int = PASSAGE_MAX,
           checkpoint: str = "fake/bge-m3") -> dict[str, Any]:
    """A model config as Triton's JSON answers it."""
    return {"max_batch_size": MAX_BATCH, "parameters": {
        c.CONFIG_QUERY_MAX_LENGTH: {"string_value": str(max_length_query)},
        c.CONFIG_PASSAGE_MAX_LENGTH: {"string_value": str(max_length_passage)},
        c.CONFIG_DTYPE: {"string_value": "float32"}, c.CONFIG_CHECKPOINT: {"string_value": checkpoint}}}


CONFIGS = {c.EMBED_MODEL: config(), c.RERANK_MODEL: config(),
           c.CROSS_ENCODER_MODEL: config(CROSS_MAX, CROSS_MAX, "fake/bge-reranker")}


class Refused(Exception):
    """A request the model answers with INVALID_ARG."""


def _texts(call: Call, name: str) -> list[str]:
    array = call.inputs[name]
    if array.ndim != 2 or array.shape[1] != 1:
        raise Refused(f"input {name!r} must have shape [n, 1], got {list(array.shape)}")
    if array.shape[0] > MAX_BATCH:
        raise Refused(f"inference request batch-size must be <= {MAX_BATCH}")
    try:
        return [bytes(v).decode("utf-8") for v in array.reshape(-1)]
    except UnicodeDecodeError:
        raise Refused(f"{name} is not valid UTF-8") from None


class _Params:
    def __init__(self, call: Call, known: tuple[str, ...]) -> None:
        for value in call.parameters.values():  # tritonclient sends 64-bit integers, and fails building
            if isinstance(value, int) and not -(2**63) <= value < 2**63:  # the request for any other
                raise ValueError(f"Value out of range: {value}")
        self.values = json.loads(json.dumps(call.parameters))  # what goes over the wire: JSON
        unknown = sorted(set(self.values) - set(known))
        if unknown:
            raise Refused(f"unknown request parameter(s): {', '.join(unknown)}")

    def int(self, name: str, default: int, low: int, high: int) -> int:
        value = self.values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Refused(f"parameter {name!r} must be an integer between {low} and {high}, got {value!r}")
        return value

    def float(self, name: str, default: float) -> float:
        value = self.values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Refused(f"parameter {name!r} must be a number, got {value!r}")
        return float(value)


def _word_id(word: str) -> int:
    return 5 + int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=4).digest()) % 1000


def _unit(seed: str, rows: int) -> np.ndarray:
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(seed.encode("utf-8"), digest_size=8).digest()))
    x = rng.standard_normal((rows, WIDTH)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _tokens(text: str, max_length: int) -> tuple[list[int], list[tuple[int, int]], bool]:
    """Token ids and spans (`<s>` and `</s>` with -1, -1), cut at `max_length`, and whether it was cut."""
    words = [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]
    kept = words[: max_length - 2]
    ids = [0] + [_word_id(w) for w, _, _ in kept] + [2]
    spans = [(-1, -1)] + [(a, b) for _, a, b in kept] + [(-1, -1)]
    return ids, spans, len(kept) < len(words)


def embed(call: Call) -> dict[str, np.ndarray]:
    params = _Params(call, (c.PARAM_MODE, c.PARAM_MAX_LENGTH, c.PARAM_DENSE_FORMAT, c.PARAM_COLBERT_FORMAT))
    chosen = {}
    for name in (c.PARAM_DENSE_FORMAT, c.PARAM_COLBERT_FORMAT):
        chosen[name] = params.values.get(name, formats.FLOAT32)
        if chosen[name] not in formats.FORMATS:
            raise Refused(f"parameter {name!r} must be one of {', '.join(formats.FORMATS)}, got {chosen[name]!r}")
    mode = params.values.get(c.PARAM_MODE, "query")
    if mode not in c.MODES:
        raise Refused(f"parameter 'mode' must be one of {', '.join(c.MODES)}, got {mode!r}")
    default = QUERY_MAX if mode == "query" else PASSAGE_MAX
    max_length = params.int(c.PARAM_MAX_LENGTH, default, 2, PASSAGE_MAX)
    texts = _texts(call, c.TEXT)
    outputs = set(call.outputs) or set(c.DEFAULT_OUTPUTS)
    tokenized = [_tokens(text, max_length) for text in texts]
    out: dict[str, np.ndarray] = {
        c.TOKENS: np.array([[len(ids)] for ids, _, _ in tokenized], np.int32),
        c.TRUNCATED: np.array([[cut] for _, _, cut in tokenized], np.bool_),
        c.TOKEN_IDS: np.array([i for ids, _, _ in tokenized for i in ids], np.int32),
        c.TOKEN_SPANS: np.array([s for _, spans, _ in tokenized for s in spans], np.int32).reshape(-1, 2),
        c.DENSE: np.concatenate([_unit(text, 1) for text in texts]) if texts else np.zeros((0, WIDTH), np.float32),
    }
    sparse = [sorted({i: 0.1 + (i % 7) / 10 for i in ids[1:-1]}.items()) for ids, _, _ in tokenized]
    out[c.SPARSE_INDICES] = np.array([i for pairs in sparse for i, _ in pairs], np.int32)
    out[c.SPARSE_VALUES] = np.array([v for pairs in sparse for _, v in pairs], np.float32)
    out[c.SPARSE_LENGTHS] = np.array([[len(pairs)] for pairs in sparse], np.int32)
    colbert = [_unit(f"{text}/colbert", len(ids) - 1) for text, (ids, _, _) in zip(texts, tokenized)]
    out[c.COLBERT] = np.concatenate(colbert) if colbert else np.zeros((0, WIDTH), np.float32)
    out[c.COLBERT_LENGTHS] = np.array([[len(v)] for v in colbert], np.int32)
    for name, scale_name, param in ((c.DENSE, c.DENSE_SCALE, c.PARAM_DENSE_FORMAT),
                                    (c.COLBERT, c.COLBERT_SCALE, c.PARAM_COLBERT_FORMAT)):
        out[name], scale = formats.encode(out[name], chosen[param])
        if scale is not None:
            out[scale_name] = scale
    return {name: array for name, array in out.items() if name in outputs}


def rerank(call: Call) -> dict[str, np.ndarray]:
    params = _Params(call, (*c.PARAM_WEIGHTS, c.PARAM_MAX_QUERY_LENGTH, c.PARAM_MAX_PASSAGE_LENGTH))
    try:
        c.check_weights([params.float(name, d) for name, d in zip(c.PARAM_WEIGHTS, c.DEFAULT_WEIGHTS)])
    except ValueError as exc:
        raise Refused(str(exc)) from None
    params.int(c.PARAM_MAX_QUERY_LENGTH, QUERY_MAX, 2, PASSAGE_MAX)
    params.int(c.PARAM_MAX_PASSAGE_LENGTH, PASSAGE_MAX, 2, PASSAGE_MAX)
    queries, passages = _texts(call, c.QUERY), _texts(call, c.PASSAGE)
    rows = [[float(_unit(q, 1)[0] @ _unit(p, 1)[0])] * len(c.SCORE_COLUMNS) for q, p in zip(queries, passages)]
    return {c.SCORES: np.array(rows, np.float32).reshape(-1, len(c.SCORE_COLUMNS))}


def cross_encoder(call: Call) -> dict[str, np.ndarray]:
    params = _Params(call, (c.PARAM_NORMALIZE, c.PARAM_MAX_LENGTH, c.PARAM_MAX_QUERY_LENGTH))
    max_length = params.int(c.PARAM_MAX_LENGTH, CROSS_MAX, 4, CROSS_MAX)
    params.int(c.PARAM_MAX_QUERY_LENGTH, max_length * 3 // 4, 1, max_length)
    queries, passages = _texts(call, c.QUERY), _texts(call, c.PASSAGE)
    logits = np.array([float(_unit(q, 1)[0] @ _unit(p, 1)[0]) * 4 for q, p in zip(queries, passages)], np.float32)
    if params.values.get(c.PARAM_NORMALIZE, True):
        logits = 1 / (1 + np.exp(-logits))
    return {c.SCORE: logits.reshape(-1, 1)}


MODELS: dict[str, Callable[[Call], dict[str, np.ndarray]]] = {
    c.EMBED_MODEL: embed, c.RERANK_MODEL: rerank, c.CROSS_ENCODER_MODEL: cross_encoder}


def answer(call: Call) -> dict[str, np.ndarray] | BaseException:
    """The served model's answer to `call`, or the error Triton would send."""
    model = MODELS.get(call.model)
    if model is None:
        return StatusError("400", f"Request for unknown model: '{call.model}' is not found")
    try:
        return model(call)
    except Refused as exc:
        return StatusError("400", str(exc))


def transport(cross_encoder: bool = True) -> FakeTransport:
    """A blocking fake transport serving the embed and rerank models (and the cross-encoder)."""
    ready = [c.EMBED_MODEL, c.RERANK_MODEL] + ([c.CROSS_ENCODER_MODEL] if cross_encoder else [])
    return FakeTransport(answer, {m: CONFIGS[m] for m in ready}, ready)


def async_transport(cross_encoder: bool = True) -> AsyncFakeTransport:
    """The asyncio twin of `transport`."""
    ready = [c.EMBED_MODEL, c.RERANK_MODEL] + ([c.CROSS_ENCODER_MODEL] if cross_encoder else [])
    return AsyncFakeTransport(answer, {m: CONFIGS[m] for m in ready}, ready)
