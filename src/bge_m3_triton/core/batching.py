"""Length-sorted sub-batches under a padded-token budget, for every text of a dynamic batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def plan_sub_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Split text positions into forward passes, longest first.

    Each sub-batch costs `rows * longest row` padded tokens and stays within `max_tokens` and
    `max_rows`; a single text longer than the budget runs alone. Every position appears once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for position in order:
        if current:
            longest = lengths[current[0]]
            if len(current) >= max_rows or (len(current) + 1) * longest > max_tokens:
                batches.append(current)
                current = []
        current.append(position)
    if current:
        batches.append(current)
    return batches


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id rows into `(input_ids, attention_mask)` int64 tensors."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    return ids, mask
