"""Length-sorted sub-batches under a padded-token budget, for every text of a batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch


class Interrupted(Exception):
    """A forward pass was asked to stop (`Interrupt.set`) and did, between two sub-batches."""


class Interrupt:
    """A flag another thread raises to stop a model's forward passes at their next sub-batch (a server
    shutting down with work left when its drain window is over). Once set, it stays set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask every forward pass of the model to stop."""
        self._event.set()

    def check(self) -> None:
        """Raise `Interrupted` when a stop was asked for (called between sub-batches)."""
        if self._event.is_set():
            raise Interrupted("the forward pass was stopped: the server is shutting down")


def plan_sub_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Split text positions into forward passes, longest first, as few as the budget allows and even.

    Each sub-batch costs `rows * longest row` padded tokens and stays within `max_tokens` and
    `max_rows`; a single text longer than the budget runs alone. Every position appears once. Of the
    plans with the fewest sub-batches, the one whose costliest sub-batch is cheapest: 17 passages of
    256 tokens under a 4,096-token budget run as 9 + 8, not 16 + 1 (a sub-batch of one row runs at
    about 70% of the rate of a full one on CPU).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    fewest = _greedy(order, lengths, max_tokens, max_rows)
    if len(fewest) <= 1:
        return fewest
    low, high = 1, max_tokens  # the smallest cost cap that still needs no more sub-batches
    while low < high:
        middle = (low + high) // 2
        if len(_greedy(order, lengths, middle, max_rows)) <= len(fewest):
            high = middle
        else:
            low = middle + 1
    return _greedy(order, lengths, low, max_rows)


def _greedy(order: Sequence[int], lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Positions in `order` (longest first) packed in turn: a sub-batch closes when one more row would
    pass `max_rows` or `max_tokens` padded tokens. For a given cap this gives the fewest sub-batches."""
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
