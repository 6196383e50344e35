"""The combined-score rerank model: BGE-M3 scores of (query, passage) pairs through the embed model.

It holds no weights: texts go to the embed model over BLS (joining its batches), and the
scores are computed here from the three outputs. Texts repeated across the pairs of a batch, such
as one query with many passages, are embedded once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from bge_m3_client import contract as c
from bge_m3_triton.core.scoring import TextVectors, all_scores
from bge_m3_triton.core.settings import ModelSettings
from bge_m3_triton.serving import bls
from bge_m3_triton.serving.params import InvalidRequest
from bge_m3_triton.serving.triton_glue import Outputs, RequestView

# No upper bound here: the embed model refuses a max length over its checkpoint's position limit,
# and that refusal comes back through BLS as this request's INVALID_ARG.
NO_LIMIT = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class RerankJob:
    """One request: its pairs, weights (dense, sparse, colbert) and max lengths."""

    queries: list[str]
    passages: list[str]
    weights: tuple[float, float, float]
    max_query_length: int
    max_passage_length: int


class RerankService:
    """Parses rerank requests and scores every pair of a dynamic batch."""

    def __init__(self, pb: Any, settings: ModelSettings) -> None:
        self.pb = pb
        self.settings = settings

    def parse(self, view: RequestView) -> RerankJob:
        """Validate one request; raises `InvalidRequest` with the reason."""
        params = view.params()
        params.check_known((*c.PARAM_WEIGHTS, c.PARAM_MAX_QUERY_LENGTH, c.PARAM_MAX_PASSAGE_LENGTH))
        weights = tuple(params.get_float(name, default) for name, default in zip(c.PARAM_WEIGHTS, c.DEFAULT_WEIGHTS))
        try:
            checked = c.check_weights(weights)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        queries, passages = view.texts(c.QUERY), view.texts(c.PASSAGE)
        if len(queries) != len(passages):
            raise InvalidRequest(f"{c.QUERY} has {len(queries)} rows but {c.PASSAGE} has {len(passages)}")
        return RerankJob(
            queries=queries, passages=passages, weights=checked,
            max_query_length=params.get_int(c.PARAM_MAX_QUERY_LENGTH, self.settings.query_max_length, 2,
                                            NO_LIMIT),
            max_passage_length=params.get_int(c.PARAM_MAX_PASSAGE_LENGTH, self.settings.passage_max_length, 2,
                                              NO_LIMIT))

    async def run(self, jobs: Sequence[RerankJob]) -> list[Outputs | Exception]:
        """Embed every distinct (text, max length) once, then score each job's pairs."""
        wanted: dict[int, dict[str, None]] = {}
        for job in jobs:
            wanted.setdefault(job.max_query_length, {}).update(dict.fromkeys(job.queries))
            wanted.setdefault(job.max_passage_length, {}).update(dict.fromkeys(job.passages))
        vectors: dict[tuple[int, str], TextVectors | Exception] = {}
        for max_length, texts in wanted.items():
            text_list = list(texts)
            try:
                embedded: Sequence[TextVectors | Exception] = await bls.embed_texts(
                    self.pb, self.settings.embed_model, text_list, max_length, self.settings.embed_max_batch_size)
            except Exception as exc:  # answer the jobs that needed these texts with the error
                embedded = [exc] * len(text_list)
            vectors.update({(max_length, text): v for text, v in zip(text_list, embedded)})
        return [self._score_job(job, vectors) for job in jobs]

    @staticmethod
    def _score_job(job: RerankJob, vectors: dict[tuple[int, str], TextVectors | Exception]) -> Outputs | Exception:
        rows = []
        for query, passage in zip(job.queries, job.passages):
            q, p = vectors[(job.max_query_length, query)], vectors[(job.max_passage_length, passage)]
            if isinstance(q, Exception):
                return q
            if isinstance(p, Exception):
                return p
            rows.append(all_scores(q, p, job.weights))
        return {c.SCORES: np.array(rows, dtype=np.float32).reshape(-1, len(c.SCORE_COLUMNS))}
