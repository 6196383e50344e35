"""Tokenization with per-text max lengths and an exact "was it truncated" flag."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Span = tuple[int, int]
SPECIAL_SPAN: Span = (-1, -1)


@dataclasses.dataclass
class Tokenized:
    """Token ids (with `<s>` ... `</s>`) and whether each text lost tokens to its max length.

    `spans`, when asked for, holds each token's `[start, stop)` character offsets in its text,
    `SPECIAL_SPAN` for special tokens such as `<s>` and `</s>`.
    """

    ids: list[list[int]]
    truncated: list[bool]
    spans: list[list[Span]] | None = None


def load_tokenizer(folder: Path) -> Any:
    """The checkpoint's fast tokenizer (XLM-R's for BGE-M3)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def tokenize(tokenizer: Any, texts: Sequence[str], max_lengths: Sequence[int], spans: bool = False) -> Tokenized:
    """Tokenize `texts`, text i truncated to `max_lengths[i]` tokens the way the tokenizer truncates.

    Each group of equal max length is tokenized in one call at one token more than its limit; a
    text that reaches that length was truncated, and dropping its last content token gives exactly
    the ids that truncation at the limit gives. With `spans`, character offsets come too.
    """
    ids: list[list[int]] = [[] for _ in texts]
    offsets: list[list[Span]] = [[] for _ in texts]
    truncated = [False] * len(texts)
    groups: dict[int, list[int]] = defaultdict(list)
    for position, limit in enumerate(max_lengths):
        groups[limit].append(position)
    for limit, positions in groups.items():
        encoded = tokenizer([texts[p] for p in positions], truncation=True, max_length=limit + 1,
                            return_attention_mask=False, return_token_type_ids=False,
                            return_offsets_mapping=spans, return_special_tokens_mask=spans)
        for index, (position, row) in enumerate(zip(positions, encoded["input_ids"])):
            keep = _kept(len(row), limit)
            truncated[position] = len(row) > limit
            ids[position] = row[: limit - 1] + row[-1:] if truncated[position] else list(row)
            if spans:
                special, mapping = encoded["special_tokens_mask"][index], encoded["offset_mapping"][index]
                offsets[position] = [SPECIAL_SPAN if special[i] else (int(mapping[i][0]), int(mapping[i][1]))
                                     for i in keep]
    return Tokenized(ids=ids, truncated=truncated, spans=offsets if spans else None)


def _kept(length: int, limit: int) -> range | list[int]:
    """Positions kept of a row tokenized at `limit + 1`: all, or all but the last content token."""
    if length <= limit:
        return range(length)
    return [*range(limit - 1), length - 1]
