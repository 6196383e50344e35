"""The cross-encoder model's logic between Triton tensors and `CrossEncoder` (no Triton imports)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from bge_m3_client import contract as c
from bge_m3_triton.core.cross_encoder import CrossEncoder
from bge_m3_triton.serving.params import InvalidRequest
from bge_m3_triton.serving.triton_glue import Outputs, RequestView


@dataclasses.dataclass(frozen=True)
class CrossJob:
    """One request: pairs, max lengths, sigmoid or raw logits."""

    queries: list[str]
    passages: list[str]
    max_length: int
    max_query_length: int
    normalize: bool


class CrossEncoderService:
    """Parses cross-encoder requests and scores all pairs of a dynamic batch together."""

    def __init__(self, model: CrossEncoder, hold: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self.model = model
        self.hold = hold  # held around the forward pass (serving.forward_gate)

    def parse(self, view: RequestView) -> CrossJob:
        """Validate one request; raises `InvalidRequest` with the reason."""
        params = view.params()
        params.check_known((c.PARAM_NORMALIZE, c.PARAM_MAX_LENGTH, c.PARAM_MAX_QUERY_LENGTH))
        max_length = params.get_int(c.PARAM_MAX_LENGTH, min(self.model.settings.passage_max_length,
                                                            self.model.max_positions), 4, self.model.max_positions)
        queries, passages = view.texts(c.QUERY), view.texts(c.PASSAGE)
        if len(queries) != len(passages):
            raise InvalidRequest(f"{c.QUERY} has {len(queries)} rows but {c.PASSAGE} has {len(passages)}")
        return CrossJob(queries=queries, passages=passages, max_length=max_length,
                        max_query_length=params.get_int(c.PARAM_MAX_QUERY_LENGTH, max_length * 3 // 4, 1, max_length),
                        normalize=params.get_bool(c.PARAM_NORMALIZE, True))

    def run(self, jobs: Sequence[CrossJob]) -> list[Outputs]:
        """Score every pair of every job in one set of sub-batches."""
        ids: list[list[int]] = []
        normalize: list[bool] = []
        for job in jobs:
            ids.extend(self.model.pair_ids(job.queries, job.passages, job.max_length, job.max_query_length))
            normalize.extend([job.normalize] * len(job.queries))
        with self.hold():
            scores = self.model.score(ids, normalize)
        out, start = [], 0
        for job in jobs:
            out.append({c.SCORE: np.array(scores[start:start + len(job.queries)], dtype=np.float32).reshape(-1, 1)})
            start += len(job.queries)
        return out
