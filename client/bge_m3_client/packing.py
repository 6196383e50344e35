"""Turning client calls into Triton requests and responses back into results (no I/O here).

Both the sync and the async client use these, so they build identical requests.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from bge_m3_client import contract as c
from bge_m3_client import formats
from bge_m3_client.errors import BGEM3Error, InvalidInputError
from bge_m3_client.results import TokenizedText, decode_embeddings, decode_tokenized
from bge_m3_client.transport import Call

Chunk = tuple[int, int]


def as_text_list(texts: str | Sequence[str]) -> list[str]:
    """Accept one string or a sequence of strings."""
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{index}] is {type(text).__name__}, not str")
    return texts


# ColBERT outputs are tokens x 1024 float32 per text: 64 passages of 8,192 tokens would be 2 GiB,
# past gRPC's message limit. Requests asking for ColBERT are packed under this estimate.
COLBERT_DIM = 1024  # BGE-M3's; a smaller model's vectors only make the estimate safer
COLBERT_REQUEST_BUDGET = 256 << 20


def chunks(count: int, batch_size: int, max_batch_size: int, costs: Sequence[int] | None = None,
           budget: int = 0) -> list[Chunk]:
    """[start, stop) ranges: `batch_size` texts each (0: as many as the model takes), never above its max.

    With `costs`, a range also stays within `budget` (a single text over it goes alone).
    """
    if batch_size < 0:
        raise InvalidInputError("batch_size must be 0 (as large as the model allows) or positive")
    size = min(batch_size or max_batch_size, max_batch_size) if max_batch_size > 0 else (batch_size or count)
    size = max(size, 1)
    ranges: list[Chunk] = []
    start = 0
    while start < count:
        stop, total = start, 0
        while stop < count and stop - start < size:
            cost = costs[stop] if costs is not None else 0
            if stop > start and budget and total + cost > budget:
                break
            total += cost
            stop += 1
        ranges.append((start, stop))
        start = stop
    return ranges


def colbert_costs(texts: Sequence[str], max_length: int, fmt: str = formats.FLOAT32) -> list[int]:
    """Upper bounds of each text's ColBERT bytes in `fmt` (a token holds at least one UTF-8 byte); a
    `max_length` of 0 (unknown) bounds by the text alone."""
    per_token = formats.bytes_per_vector(fmt, COLBERT_DIM)
    return [min(len(text.encode("utf-8")) + 2, max_length or 1 << 62) * per_token for text in texts]


def utf8(text: str, where: str) -> bytes:
    """`text` as UTF-8; `InvalidInputError` naming `where` when it cannot be encoded.

    A Python string may hold a lone surrogate (JSON's `"\\ud83d"`, what a JavaScript client sends after
    cutting a string in the middle of an emoji), which is no Unicode character and has no UTF-8 form.
    Every text the clients send passes here, and the gateway checks its fields with it too.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{where} is not valid Unicode: it holds a lone surrogate "
                                f"(U+{ord(text[exc.start]):04X}) at character {exc.start}") from None


def text_tensor(texts: Sequence[str], name: str = "texts", first: int = 0) -> np.ndarray:
    """A BYTES tensor of shape [n, 1]; `texts` are `name[first]`, `name[first + 1]`... in error messages."""
    return np.array([utf8(text, f"{name}[{first + i}]") for i, text in enumerate(texts)],
                    dtype=object).reshape(-1, 1)


@dataclasses.dataclass(frozen=True)
class Formats:
    """The numeric formats a request asks DENSE and COLBERT in (`formats`)."""

    dense: str = formats.FLOAT32
    colbert: str = formats.FLOAT32

    def __post_init__(self) -> None:
        try:
            formats.check(self.dense, "dense_format")
            formats.check(self.colbert, "colbert_format")
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None

    def parameters(self) -> dict[str, str]:
        """The request parameters that ask for them (none for float32, the models' default)."""
        asked = ((c.PARAM_DENSE_FORMAT, self.dense), (c.PARAM_COLBERT_FORMAT, self.colbert))
        return {name: fmt for name, fmt in asked if fmt != formats.FLOAT32}

    def decoder(self) -> Any:
        """The response decoder for these formats."""
        return functools.partial(decode_embeddings, dense_format=self.dense, colbert_format=self.colbert)


def plan_embed(model: str, texts: Sequence[str], served: c.ServedModel, is_passage: bool, dense: bool,
               sparse: bool, colbert: bool, batch_size: int, max_length: int | None,
               asked: Formats = Formats()) -> tuple[list[Chunk], list[Call]]:
    """The ranges of texts and the embed calls that cover them (ColBERT requests packed by size in their
    format, estimated at the served model's default max length when no `max_length` is given)."""
    limit = max_length or served.max_length(is_passage) or 0
    costs = colbert_costs(texts, limit, asked.colbert) if colbert else None
    ranges = chunks(len(texts), batch_size, served.max_batch_size, costs, COLBERT_REQUEST_BUDGET)
    outputs = embed_outputs(dense, sparse, colbert, asked)
    return ranges, embed_calls(model, texts, ranges, is_passage, outputs, max_length, asked.parameters())


def plan_tokenize(model: str, texts: Sequence[str], max_batch_size: int, is_passage: bool,
                  max_length: int | None) -> tuple[list[Chunk], list[Call]]:
    """The ranges of texts and the tokenization-only calls (no forward pass) that cover them."""
    ranges = chunks(len(texts), 0, max_batch_size)
    outputs = [*c.TOKENIZATION_OUTPUTS, *c.ALWAYS_OUTPUTS]
    return ranges, embed_calls(model, texts, ranges, is_passage, outputs, max_length)


def plan_pairs(model: str, pairs: Sequence[tuple[str, str]], max_batch_size: int, outputs: Sequence[str],
               parameters: dict[str, Any]) -> tuple[list[Chunk], list[Call]]:
    """The ranges of pairs and the rerank calls that cover them."""
    ranges = chunks(len(pairs), 0, max_batch_size)
    return ranges, pair_calls(model, pairs, ranges, outputs, parameters)


def embed_calls(model: str, texts: Sequence[str], ranges: Sequence[Chunk], is_passage: bool,
                outputs: Sequence[str], max_length: int | None, extra: dict[str, Any] | None = None) -> list[Call]:
    """One embed call per range of texts."""
    parameters: dict[str, Any] = {c.PARAM_MODE: "passage" if is_passage else "query", **(extra or {})}
    if max_length is not None:
        parameters[c.PARAM_MAX_LENGTH] = length(max_length, "max_length")
    return [Call(model, {c.TEXT: text_tensor(texts[a:b], first=a)}, list(outputs), dict(parameters))
            for a, b in ranges]


def embed_outputs(dense: bool, sparse: bool, colbert: bool, asked: Formats = Formats()) -> list[str]:
    """The output tensors to ask for (the scales only with a format that has them)."""
    unscaled = {c.DENSE_SCALE} if asked.dense not in formats.SCALED else set()
    unscaled |= {c.COLBERT_SCALE} if asked.colbert not in formats.SCALED else set()
    names = [name for group, on in (("dense", dense), ("sparse", sparse), ("colbert", colbert)) if on
             for name in c.OUTPUT_GROUPS[group] if name not in unscaled]
    return names + list(c.ALWAYS_OUTPUTS)


def collect(ranges: Sequence[Chunk], results: Sequence[dict[str, np.ndarray] | BGEM3Error],
            decode: Any) -> list[Any]:
    """Decode each range's response in order; the first failure is raised naming its texts."""
    collected: list[Any] = []
    for (start, stop), result in zip(ranges, results):
        if isinstance(result, BGEM3Error):
            raise type(result)(f"texts {start}..{stop - 1} failed: {result}", failed=(start, stop))
        collected.extend(decode(result, stop - start))
    return collected


def decode_tokens(result: dict[str, np.ndarray], count: int) -> list[TokenizedText]:
    """Decoder for tokenization responses."""
    return decode_tokenized(result, count)


def length(value: Any, name: str) -> int:
    """A token-length argument as sent: an integer from 1 to the model's position limit
    (`contract.MAX_TOKENS`); `InvalidInputError` otherwise, before anything is sent. (Triton's
    request parameters are 64-bit: a larger integer fails while the request is built, and the
    server's own bounds answer the rest.)"""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if not 1 <= value <= c.MAX_TOKENS:
        raise InvalidInputError(f"{name} must be between 1 and {c.MAX_TOKENS}, got {value}")
    return int(value)


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """The contract's weight rule (`contract.check_weights`), raised as `InvalidInputError`."""
    try:
        return c.check_weights(weights)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def pair_calls(model: str, pairs: Sequence[tuple[str, str]], ranges: Sequence[Chunk], outputs: Sequence[str],
               parameters: dict[str, Any]) -> list[Call]:
    """One rerank call per range of (query, passage) pairs."""
    return [Call(model, {c.QUERY: text_tensor([q for q, _ in pairs[a:b]], "queries", a),
                         c.PASSAGE: text_tensor([p for _, p in pairs[a:b]], "passages", a)},
                 list(outputs), dict(parameters))
            for a, b in ranges]


def cross_encoder_params(normalize: bool, max_length: int | None) -> dict[str, Any]:
    """The cross-encoder's request parameters."""
    params: dict[str, Any] = {c.PARAM_NORMALIZE: bool(normalize)}
    if max_length is not None:
        params[c.PARAM_MAX_LENGTH] = length(max_length, "max_length")
    return params


def decode_scores(result: dict[str, np.ndarray], count: int) -> list[dict[str, float]]:
    """Decoder for `bge_m3_rerank` responses: per pair, the five scores by name."""
    scores = result[c.SCORES].reshape(count, len(c.SCORE_COLUMNS))
    return [dict(zip(c.SCORE_COLUMNS, map(float, row))) for row in scores]


def decode_single_score(result: dict[str, np.ndarray], count: int) -> list[float]:
    """Decoder for `bge_reranker` responses: one score per pair."""
    return [float(x) for x in result[c.SCORE].reshape(count)]
