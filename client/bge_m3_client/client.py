"""`BGEM3Client` and `AsyncBGEM3Client`: encode, tokenize, score and rerank over Triton.

`BGEM3Client` is safe to share between threads (each thread gets its own connections); an
`AsyncBGEM3Client` belongs to the event loop it is used in. The RunPod and FastAPI-sketch shapes
are in `bge_m3_client.adapters`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from bge_m3_client import contract as c
from bge_m3_client import packing as rq
from bge_m3_client.errors import BGEM3Error
from bge_m3_client.results import EmbeddingResult, TokenizedText
from bge_m3_client.transport import AsyncTransport, AsyncTransportLike, Call, Result, SyncTransport, Transport

Pairs = Sequence[tuple[str, str]]


class _Common:
    """Arguments and request planning shared by the sync and the async client."""

    def __init__(self, url: str, protocol: str, timeout: float, model: str, rerank_model: str,
                 cross_encoder_model: str, retries: int, backoff: float) -> None:
        self.url = url
        self.protocol = protocol
        self.timeout = timeout
        self.model = model
        self.rerank_model = rerank_model
        self.cross_encoder_model = cross_encoder_model
        self.retries = retries
        self.backoff = backoff
        self._served: dict[str, c.ServedModel] = {}
        self._default_reranker: str | None = None

    def _score_params(self, weights: Sequence[float], max_query_length: int | None,
                      max_passage_length: int | None) -> dict[str, Any]:
        params: dict[str, Any] = dict(zip(c.PARAM_WEIGHTS, rq.check_weights(weights)))
        if max_query_length is not None:
            params[c.PARAM_MAX_QUERY_LENGTH] = rq.length(max_query_length, "max_query_length")
        if max_passage_length is not None:
            params[c.PARAM_MAX_PASSAGE_LENGTH] = rq.length(max_passage_length, "max_passage_length")
        return params

    @staticmethod
    def _ranked(scores: Sequence[float], top_n: int | None) -> list[tuple[int, float]]:
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [(i, float(scores[i])) for i in order[: top_n if top_n is not None else len(order)]]


class BGEM3Client(_Common):
    """Blocking client for the bge-m3-triton models (HTTP or gRPC).

    Requests are split to the model's `max_batch_size` (read from its served config) or
    `batch_size`, sent concurrently so Triton's dynamic batcher can fill batches, and answered in
    input order. Unavailable servers and queue rejections are retried `retries` times with
    exponential backoff (`backoff`, 2x, 4x ... seconds).

    One client may be shared by any number of threads (a web app's worker pool, a thread pool over
    documents): each thread gets its own tritonclient connections, made on first use. `transport`
    replaces the network (tests use `bge_m3_client.testing.FakeTransport`).
    """

    def __init__(self, url: str = "localhost:8000", protocol: str = "http", timeout: float = 120.0,
                 model: str = c.EMBED_MODEL, rerank_model: str = c.RERANK_MODEL,
                 cross_encoder_model: str = c.CROSS_ENCODER_MODEL, concurrency: int = 8, retries: int = 3,
                 backoff: float = 0.2, transport: Transport | None = None) -> None:
        super().__init__(url, protocol, timeout, model, rerank_model, cross_encoder_model, retries, backoff)
        self.transport: Transport = transport or SyncTransport(url, protocol, timeout, concurrency)
        self.sleep: Callable[[float], None] = time.sleep  # the backoff's wait (tests replace it)

    def __enter__(self) -> BGEM3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self.transport.close()

    def served(self, model: str) -> c.ServedModel:
        """The model's limits (batch size, default max lengths), read once from its served config."""
        if model not in self._served:
            config = self._with_retry(lambda: self.transport.model_config(model))
            self._served[model] = c.ServedModel.from_config(config)
        return self._served[model]

    def max_batch_size(self, model: str) -> int:
        """The model's `max_batch_size`, read once from the server."""
        return self.served(model).max_batch_size

    def encode(self, texts: str | Sequence[str], is_passage: bool = False, return_dense: bool = True,
               return_sparse: bool = True, return_colbert: bool = False, batch_size: int = 0,
               max_length: int | None = None, dense_format: str = "float32",
               colbert_format: str = "float32") -> list[EmbeddingResult]:
        """Embed texts (queries, or passages with `is_passage`); one result per text, in order. The dense and
        ColBERT vectors come in the formats asked for (`bge_m3_client.formats`: float32, float16, int8,
        uint8, binary, ubinary), as numpy arrays of that dtype."""
        text_list = rq.as_text_list(texts)
        if not text_list:
            return []
        asked = rq.Formats(dense_format, colbert_format)
        ranges, calls = rq.plan_embed(self.model, text_list, self.served(self.model), is_passage,
                                      return_dense, return_sparse, return_colbert, batch_size, max_length, asked)
        return rq.collect(ranges, self._send(calls), asked.decoder())

    def tokenize(self, texts: str | Sequence[str], is_passage: bool = False,
                 max_length: int | None = None) -> list[TokenizedText]:
        """The served model's tokens of each text (ids, character spans, truncation); no forward pass."""
        text_list = rq.as_text_list(texts)
        if not text_list:
            return []
        ranges, calls = rq.plan_tokenize(self.model, text_list, self.max_batch_size(self.model), is_passage,
                                         max_length)
        return rq.collect(ranges, self._send(calls), rq.decode_tokens)

    def score(self, query: str, passages: Sequence[str], weights: Sequence[float] = c.DEFAULT_WEIGHTS,
              max_query_length: int | None = None, max_passage_length: int | None = None
              ) -> list[dict[str, float]]:
        """BGE-M3's scores of `query` against each passage: dense, sparse, colbert and the weighted mixes."""
        return self.score_pairs([(query, p) for p in rq.as_text_list(passages)], weights, max_query_length,
                                max_passage_length)

    def score_pairs(self, pairs: Pairs, weights: Sequence[float] = c.DEFAULT_WEIGHTS,
                    max_query_length: int | None = None, max_passage_length: int | None = None
                    ) -> list[dict[str, float]]:
        """Like `score`, for (query, passage) pairs (the FastAPI sketch's `sentence_pairs`)."""
        pairs = [(str(q), str(p)) for q, p in pairs]
        if not pairs:
            return []
        params = self._score_params(weights, max_query_length, max_passage_length)
        ranges, calls = rq.plan_pairs(self.rerank_model, pairs, self.max_batch_size(self.rerank_model),
                                      [c.SCORES], params)
        return rq.collect(ranges, self._send(calls), rq.decode_scores)

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None, model: str | None = None,
               normalize: bool = True, max_length: int | None = None) -> list[tuple[int, float]]:
        """(index, score) pairs, best first: the cross-encoder when deployed, else BGE-M3's combined score.

        `max_length` caps the tokens of each (query, document) pair for the cross-encoder, of each
        document for the combined score; `normalize` (sigmoid) applies to the cross-encoder only.
        """
        documents = rq.as_text_list(documents)
        if not documents:
            return []
        if model is None:
            if self._default_reranker is None:
                ready = self.transport.is_model_ready(self.cross_encoder_model)
                self._default_reranker = self.cross_encoder_model if ready else self.rerank_model
            model = self._default_reranker
        if model == self.rerank_model:
            scores = [s[c.COMBINED_SCORE] for s in self.score(query, documents, max_passage_length=max_length)]
        else:
            pairs = [(query, d) for d in documents]
            ranges, calls = rq.plan_pairs(model, pairs, self.max_batch_size(model), [c.SCORE],
                                          rq.cross_encoder_params(normalize, max_length))
            scores = rq.collect(ranges, self._send(calls), rq.decode_single_score)
        return self._ranked(scores, top_n)

    def _send(self, calls: list[Call]) -> list[Result]:
        results = self.transport.infer_many(calls)
        for attempt in range(self.retries):
            retry = [i for i, r in enumerate(results) if isinstance(r, BGEM3Error) and r.retryable]
            if not retry:
                break
            self.sleep(self.backoff * 2**attempt)
            for index, result in zip(retry, self.transport.infer_many([calls[i] for i in retry])):
                results[index] = result
        return results

    def _with_retry(self, action: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return action()
            except BGEM3Error as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                self.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")


class AsyncBGEM3Client(_Common):
    """asyncio twin of `BGEM3Client`, with the same methods as coroutines and identical results."""

    def __init__(self, url: str = "localhost:8000", protocol: str = "http", timeout: float = 120.0,
                 model: str = c.EMBED_MODEL, rerank_model: str = c.RERANK_MODEL,
                 cross_encoder_model: str = c.CROSS_ENCODER_MODEL, concurrency: int = 8, retries: int = 3,
                 backoff: float = 0.2, transport: AsyncTransportLike | None = None) -> None:
        super().__init__(url, protocol, timeout, model, rerank_model, cross_encoder_model, retries, backoff)
        self.transport: AsyncTransportLike = transport or AsyncTransport(url, protocol, timeout, concurrency)

    async def __aenter__(self) -> AsyncBGEM3Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections."""
        await self.transport.close()

    async def served(self, model: str) -> c.ServedModel:
        """See `BGEM3Client.served` (retried the same way)."""
        if model not in self._served:
            for attempt in range(self.retries + 1):
                try:
                    config = await self.transport.model_config(model)
                    break
                except BGEM3Error as exc:
                    if not exc.retryable or attempt == self.retries:
                        raise
                    await asyncio.sleep(self.backoff * 2**attempt)
            self._served[model] = c.ServedModel.from_config(config)
        return self._served[model]

    async def max_batch_size(self, model: str) -> int:
        """The model's `max_batch_size`, read once from the server."""
        return (await self.served(model)).max_batch_size

    async def encode(self, texts: str | Sequence[str], is_passage: bool = False, return_dense: bool = True,
                     return_sparse: bool = True, return_colbert: bool = False, batch_size: int = 0,
                     max_length: int | None = None, dense_format: str = "float32",
                     colbert_format: str = "float32") -> list[EmbeddingResult]:
        """See `BGEM3Client.encode`."""
        text_list = rq.as_text_list(texts)
        if not text_list:
            return []
        asked = rq.Formats(dense_format, colbert_format)
        ranges, calls = rq.plan_embed(self.model, text_list, await self.served(self.model), is_passage,
                                      return_dense, return_sparse, return_colbert, batch_size, max_length, asked)
        return rq.collect(ranges, await self._send(calls), asked.decoder())

    async def tokenize(self, texts: str | Sequence[str], is_passage: bool = False,
                       max_length: int | None = None) -> list[TokenizedText]:
        """See `BGEM3Client.tokenize`."""
        text_list = rq.as_text_list(texts)
        if not text_list:
            return []
        ranges, calls = rq.plan_tokenize(self.model, text_list, await self.max_batch_size(self.model), is_passage,
                                         max_length)
        return rq.collect(ranges, await self._send(calls), rq.decode_tokens)

    async def score(self, query: str, passages: Sequence[str], weights: Sequence[float] = c.DEFAULT_WEIGHTS,
                    max_query_length: int | None = None, max_passage_length: int | None = None
                    ) -> list[dict[str, float]]:
        """See `BGEM3Client.score`."""
        return await self.score_pairs([(query, p) for p in rq.as_text_list(passages)], weights, max_query_length,
                                      max_passage_length)

    async def score_pairs(self, pairs: Pairs, weights: Sequence[float] = c.DEFAULT_WEIGHTS,
                          max_query_length: int | None = None, max_passage_length: int | None = None
                          ) -> list[dict[str, float]]:
        """See `BGEM3Client.score_pairs`."""
        pairs = [(str(q), str(p)) for q, p in pairs]
        if not pairs:
            return []
        params = self._score_params(weights, max_query_length, max_passage_length)
        ranges, calls = rq.plan_pairs(self.rerank_model, pairs, await self.max_batch_size(self.rerank_model),
                                      [c.SCORES], params)
        return rq.collect(ranges, await self._send(calls), rq.decode_scores)

    async def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
                     model: str | None = None, normalize: bool = True,
                     max_length: int | None = None) -> list[tuple[int, float]]:
        """See `BGEM3Client.rerank`."""
        documents = rq.as_text_list(documents)
        if not documents:
            return []
        if model is None:
            if self._default_reranker is None:
                ready = await self.transport.is_model_ready(self.cross_encoder_model)
                self._default_reranker = self.cross_encoder_model if ready else self.rerank_model
            model = self._default_reranker
        if model == self.rerank_model:
            scores = [s[c.COMBINED_SCORE]
                      for s in await self.score(query, documents, max_passage_length=max_length)]
        else:
            pairs = [(query, d) for d in documents]
            ranges, calls = rq.plan_pairs(model, pairs, await self.max_batch_size(model), [c.SCORE],
                                          rq.cross_encoder_params(normalize, max_length))
            scores = rq.collect(ranges, await self._send(calls), rq.decode_single_score)
        return self._ranked(scores, top_n)

    async def _send(self, calls: list[Call]) -> list[Result]:
        results = list(await asyncio.gather(*(self.transport.infer(call) for call in calls)))
        for attempt in range(self.retries):
            retry = [i for i, r in enumerate(results) if isinstance(r, BGEM3Error) and r.retryable]
            if not retry:
                break
            await asyncio.sleep(self.backoff * 2**attempt)
            again = await asyncio.gather(*(self.transport.infer(calls[i]) for i in retry))
            for index, result in zip(retry, again):
                results[index] = result
        return results
