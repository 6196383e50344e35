"""The embed model's logic between Triton tensors and the model core (no Triton imports)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bge_m3_client import contract as c
from bge_m3_client import formats
from bge_m3_triton.core.m3 import M3Model, TextEmbedding
from bge_m3_triton.core.tokens import Tokenized
from bge_m3_triton.serving.params import InvalidRequest
from bge_m3_triton.serving.triton_glue import Outputs, RequestView


@dataclasses.dataclass(frozen=True)
class EmbedJob:
    """One request's work: texts, their max length, which outputs to return, and in which formats."""

    texts: list[str]
    max_length: int
    outputs: frozenset[str]
    dense_format: str = formats.FLOAT32
    colbert_format: str = formats.FLOAT32


@dataclasses.dataclass(frozen=True)
class PreparedJob:
    """A job tokenized and checked, ready for the forward pass: its output groups (dense, sparse, colbert)."""

    job: EmbedJob
    tokens: Tokenized
    groups: frozenset[str]


class EmbedService:
    """Parses embed requests; the `Collector`'s stages: tokenize a job, run every queued job through one
    forward pass, pack each job's results."""

    def __init__(self, model: M3Model) -> None:
        self.model = model

    def parse(self, view: RequestView) -> EmbedJob:
        """Validate one request into an `EmbedJob`; raises `InvalidRequest` with the reason."""
        params = view.params()
        params.check_known((c.PARAM_MODE, c.PARAM_MAX_LENGTH, c.PARAM_DENSE_FORMAT, c.PARAM_COLBERT_FORMAT))
        mode = params.get_str(c.PARAM_MODE, "query", c.MODES)
        settings = self.model.settings
        default = settings.query_max_length if mode == "query" else settings.passage_max_length
        max_length = params.get_int(c.PARAM_MAX_LENGTH, min(default, self.model.max_positions), 2,
                                    self.model.max_positions)
        outputs = view.requested_outputs(c.DEFAULT_OUTPUTS)
        unknown = outputs - set(c.EMBED_OUTPUTS)
        if unknown:
            raise InvalidRequest(f"unknown output(s) requested: {', '.join(sorted(unknown))}")
        return EmbedJob(texts=view.texts(c.TEXT), max_length=max_length, outputs=outputs,
                        dense_format=params.get_str(c.PARAM_DENSE_FORMAT, formats.FLOAT32, formats.FORMATS),
                        colbert_format=params.get_str(c.PARAM_COLBERT_FORMAT, formats.FLOAT32, formats.FORMATS))

    def prepare(self, job: EmbedJob) -> PreparedJob:
        """Tokenize one job; raises `InvalidRequest` when its response would exceed `max_response_bytes`
        (long ColBERT outputs), so it is refused before any forward pass and costs the others nothing."""
        tokens = self.model.tokenize(job.texts, [job.max_length] * len(job.texts), spans=c.TOKEN_SPANS in job.outputs)
        error = self._oversized(job, tokens)
        if error is not None:
            raise error
        groups = frozenset(group for group, names in c.OUTPUT_GROUPS.items() if job.outputs & set(names))
        return PreparedJob(job, tokens, groups)

    def forward(self, prepared: Sequence[PreparedJob]) -> list[list[TextEmbedding]]:
        """One forward pass over the texts of all jobs, split back per job. Jobs that ask for no model
        output (tokenization only) take no part in it."""
        computing = [p for p in prepared if p.groups]
        merged = Tokenized(ids=[ids for p in computing for ids in p.tokens.ids],
                           truncated=[cut for p in computing for cut in p.tokens.truncated])
        results = self.model.encode_tokenized(merged, tuple(set().union(*(p.groups for p in computing))))
        split, start = [], 0
        for p in prepared:
            if p.groups:
                split.append(results[start:start + len(p.job.texts)])
                start += len(p.job.texts)
            else:
                split.append([TextEmbedding(tokens=len(ids), truncated=cut)
                              for ids, cut in zip(p.tokens.ids, p.tokens.truncated)])
        return split

    def pack(self, prepared: PreparedJob, embeddings: Sequence[TextEmbedding]) -> Outputs:
        """One job's results in the contract's tensors."""
        job = prepared.job
        return pack_embed_outputs(embeddings, job.outputs, self.model.hidden_size, self.model.colbert_dim,
                                  prepared.tokens, job.dense_format, job.colbert_format)

    def texts(self, prepared: PreparedJob) -> int:
        """How many texts a job holds (the collector's measure of pending work)."""
        return len(prepared.job.texts)

    def interrupt(self) -> None:
        """Stop the model's forward passes at their next sub-batch (the server is shutting down)."""
        self.model.interrupt.set()

    def _oversized(self, job: EmbedJob, tokens: Tokenized) -> InvalidRequest | None:
        if not job.outputs & set(c.OUTPUT_GROUPS["colbert"]):
            return None
        size = sum(len(ids) - 1 for ids in tokens.ids) * formats.bytes_per_vector(job.colbert_format,
                                                                                  self.model.colbert_dim)
        limit = self.model.settings.max_response_bytes
        if size <= limit:
            return None
        return InvalidRequest(f"the ColBERT output of this request would be {size:,} bytes, over the "
                              f"{limit:,}-byte limit: send fewer or shorter texts per request")


def pack_embed_outputs(results: Sequence[TextEmbedding], requested: frozenset[str], dense_dim: int, colbert_dim: int,
                       tokenized: Tokenized | None = None, dense_format: str = formats.FLOAT32,
                       colbert_format: str = formats.FLOAT32) -> Outputs:
    """Lay one request's results out in the contract's tensors (ragged outputs flattened), dense and ColBERT
    in the formats asked for, with their scales where the format has them."""
    outputs: Outputs = {}
    if tokenized is not None and c.TOKEN_IDS in requested:
        outputs[c.TOKEN_IDS] = np.array([i for ids in tokenized.ids for i in ids], dtype=np.int32)
    if tokenized is not None and tokenized.spans is not None and c.TOKEN_SPANS in requested:
        outputs[c.TOKEN_SPANS] = np.array([s for spans in tokenized.spans for s in spans],
                                          dtype=np.int32).reshape(-1, 2)
    if c.DENSE in requested:
        _put(outputs, c.DENSE, c.DENSE_SCALE, formats.encode(_stack([r.dense for r in results], (0, dense_dim)),
                                                               dense_format))
    if requested & set(c.OUTPUT_GROUPS["sparse"]):
        ids = [r.sparse_ids for r in results]
        weights = [r.sparse_weights for r in results]
        outputs[c.SPARSE_INDICES] = _concat(ids, (0,), np.int32)
        outputs[c.SPARSE_VALUES] = _concat(weights, (0,), np.float32)
        outputs[c.SPARSE_LENGTHS] = _column([len(x) if x is not None else 0 for x in ids], np.int32)
    if requested & set(c.OUTPUT_GROUPS["colbert"]):
        vectors = [r.colbert for r in results]
        _put(outputs, c.COLBERT, c.COLBERT_SCALE, formats.encode(_concat(vectors, (0, colbert_dim), np.float32),
                                                                   colbert_format))
        outputs[c.COLBERT_LENGTHS] = _column([len(x) if x is not None else 0 for x in vectors], np.int32)
    if c.TOKENS in requested:
        outputs[c.TOKENS] = _column([r.tokens for r in results], np.int32)
    if c.TRUNCATED in requested:
        outputs[c.TRUNCATED] = _column([r.truncated for r in results], np.bool_)
    return {name: array for name, array in outputs.items() if name in requested}


def _put(outputs: Outputs, name: str, scale_name: str, encoded: tuple[np.ndarray, np.ndarray | None]) -> None:
    """A formatted output and, where its format has them, its per-vector scales."""
    outputs[name] = encoded[0]
    if encoded[1] is not None:
        outputs[scale_name] = encoded[1]


def _column(values: list[int] | list[bool], dtype: type) -> np.ndarray:
    """Per-text values as an [n, 1] tensor, matching the config's `dims: [ 1 ]`."""
    return np.array(values, dtype=dtype).reshape(-1, 1)


def _stack(rows: list[np.ndarray | None], empty: tuple[int, ...]) -> np.ndarray:
    present = [row for row in rows if row is not None]
    return np.stack(present).astype(np.float32, copy=False) if present else np.zeros(empty, dtype=np.float32)


def _concat(parts: list[np.ndarray | None], empty: tuple[int, ...], dtype: type) -> np.ndarray:
    present = [part for part in parts if part is not None]
    return np.concatenate(present).astype(dtype, copy=False) if present else np.zeros(empty, dtype=dtype)
