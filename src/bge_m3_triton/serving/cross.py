"""The cross-encoder model's logic between Triton tensors and `CrossEncoder` (no Triton imports)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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


@dataclasses.dataclass(frozen=True)
class CrossPrepared:
    """A job's pairs as token ids, and whether its scores go through a sigmoid."""

    ids: list[list[int]]
    normalize: bool


class CrossEncoderService:
    """Parses cross-encoder requests; the `Collector`'s stages score the pairs of every queued job together."""

    def __init__(self, model: CrossEncoder) -> None:
        self.model = model

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

    def prepare(self, job: CrossJob) -> CrossPrepared:
        """Tokenize one job's pairs."""
        ids = self.model.pair_ids(job.queries, job.passages, job.max_length, job.max_query_length)
        return CrossPrepared(ids, job.normalize)

    def forward(self, prepared: Sequence[CrossPrepared]) -> list[list[float]]:
        """Score every pair of every job in one set of sub-batches, split back per job."""
        ids = [pair for p in prepared for pair in p.ids]
        normalize = [p.normalize for p in prepared for _ in p.ids]
        scores = self.model.score(ids, normalize)
        out, start = [], 0
        for p in prepared:
            out.append(list(scores[start:start + len(p.ids)]))
            start += len(p.ids)
        return out

    def pack(self, prepared: CrossPrepared, scores: Sequence[float]) -> Outputs:
        """One job's scores as the contract's [n, 1] tensor."""
        return {c.SCORE: np.array(scores, dtype=np.float32).reshape(-1, 1)}

    def texts(self, prepared: CrossPrepared) -> int:
        """How many pairs a job holds (the collector's measure of pending work)."""
        return len(prepared.ids)

    def interrupt(self) -> None:
        """Stop the model's forward passes at their next sub-batch (the server is shutting down)."""
        self.model.interrupt.set()
