"""Tokenization with per-text max lengths and an exact "was it truncated" flag."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Tokenized:
    """Token ids (with `<s>` ... `</s>`) and whether each text lost tokens to its max length."""

    ids: list[list[int]]
    truncated: list[bool]


def load_tokenizer(folder: Path) -> Any:
    """The checkpoint's fast tokenizer (XLM-R's for BGE-M3)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def tokenize(tokenizer: Any, texts: Sequence[str], max_lengths: Sequence[int]) -> Tokenized:
    """Tokenize `texts`, text i truncated to `max_lengths[i]` tokens the way the tokenizer truncates.

    Each group of equal max length is tokenized in one call at one token more than its limit; a
    text that reaches that length was truncated, and dropping its last content token gives exactly
    the ids that truncation at the limit gives.
    """
    ids: list[list[int]] = [[] for _ in texts]
    truncated = [False] * len(texts)
    groups: dict[int, list[int]] = defaultdict(list)
    for position, limit in enumerate(max_lengths):
        groups[limit].append(position)
    for limit, positions in groups.items():
        encoded = tokenizer([texts[p] for p in positions], truncation=True, max_length=limit + 1,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        for position, row in zip(positions, encoded):
            if len(row) > limit:
                row = row[: limit - 1] + row[-1:]
                truncated[position] = True
            ids[position] = list(row)
    return Tokenized(ids=ids, truncated=truncated)
