"""The gateway's view of Triton: one `AsyncBGEM3Client` (gRPC by default) and what the server serves.

Routes call these methods and never see tritonclient; client errors come out as `ApiError`s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from bge_m3_client import AsyncBGEM3Client, BGEM3Error, EmbeddingResult, TokenizedText
from bge_m3_client import contract as c
from bge_m3_gateway.errors import ApiError, from_client_error
from bge_m3_gateway.settings import GatewaySettings

T = TypeVar("T")
EMBED_NAME = "bge-m3"
CROSS_ENCODER_NAME = "bge-reranker"
POSITION_LIMIT = c.MAX_TOKENS  # the server caps at its own model's


@dataclasses.dataclass(frozen=True)
class ServedModels:
    """What the Triton server serves, read once from its model configs."""

    embed_checkpoint: str
    dtype: str
    query_max_length: int
    passage_max_length: int
    max_batch_size: int
    cross_encoder_checkpoint: str | None
    cross_encoder_max_length: int

    def rerank_model(self, name: str | None) -> str:
        """The Triton model a rerank request's `model` field picks: the cross-encoder when deployed, unless
        the name asks for BGE-M3's combined score."""
        combined_names = {EMBED_NAME, self.embed_checkpoint, c.EMBED_MODEL, c.RERANK_MODEL}
        if self.cross_encoder_checkpoint is None or (name is not None and name in combined_names):
            return c.RERANK_MODEL
        return c.CROSS_ENCODER_MODEL

    def names(self) -> list[str]:
        """Model names for `/v1/models`."""
        return [EMBED_NAME] + ([CROSS_ENCODER_NAME] if self.cross_encoder_checkpoint else [])


class Backend:
    """Triton behind the gateway."""

    def __init__(self, settings: GatewaySettings, client: AsyncBGEM3Client | None = None) -> None:
        self.settings = settings
        self.client = client or AsyncBGEM3Client(settings.triton, protocol=settings.protocol,
                                                 timeout=settings.request_timeout, retries=settings.retries,
                                                 concurrency=settings.concurrency, backoff=0.1)
        self._served: ServedModels | None = None

    async def close(self) -> None:
        """Close Triton connections."""
        await self.client.close()

    async def served(self) -> ServedModels:
        """The served models' settings (read from Triton on first use, then kept)."""
        if self._served is None:
            embed = await self._call(self.client.transport.model_config(c.EMBED_MODEL))
            params, limits = c.config_parameters(embed), c.ServedModel.from_config(embed)
            cross_ready = await self.client.transport.is_model_ready(c.CROSS_ENCODER_MODEL)
            cross = c.ServedModel.from_config(
                await self._call(self.client.transport.model_config(c.CROSS_ENCODER_MODEL))) if cross_ready else None
            self._served = ServedModels(
                embed_checkpoint=limits.checkpoint or EMBED_NAME, dtype=params.get(c.CONFIG_DTYPE, "auto"),
                query_max_length=limits.query_max_length or 512,
                passage_max_length=limits.passage_max_length or POSITION_LIMIT,
                max_batch_size=limits.max_batch_size,
                cross_encoder_checkpoint=cross.checkpoint if cross else None,
                cross_encoder_max_length=(cross.passage_max_length or 512) if cross else 0)
        return self._served

    async def embed(self, texts: Sequence[str], passage: bool, dense: bool = True, sparse: bool = False,
                    colbert: bool = False, max_length: int | None = None, dense_format: str = "float32",
                    colbert_format: str = "float32") -> list[EmbeddingResult]:
        """The requested outputs for each text, dense and ColBERT in the formats asked for."""
        return await self._call(self.client.encode(texts, is_passage=passage, return_dense=dense,
                                                   return_sparse=sparse, return_colbert=colbert,
                                                   max_length=max_length, dense_format=dense_format,
                                                   colbert_format=colbert_format))

    async def tokenize(self, texts: Sequence[str], passage: bool = True,
                       max_length: int | None = None) -> list[TokenizedText]:
        """The served model's tokens (no forward pass)."""
        return await self._call(self.client.tokenize(texts, is_passage=passage, max_length=max_length))

    async def score_pairs(self, pairs: Sequence[tuple[str, str]], weights: Sequence[float],
                          max_query_length: int | None, max_passage_length: int | None) -> list[dict[str, float]]:
        """BGE-M3's five scores per pair."""
        return await self._call(self.client.score_pairs(pairs, weights, max_query_length, max_passage_length))

    async def rerank_scores(self, query: str, documents: Sequence[str], model: str | None, normalize: bool = True,
                            max_length: int | None = None) -> list[float]:
        """One relevance score per document, in document order, from the model `model` picks."""
        served = await self.served()
        triton_model = served.rerank_model(model)
        ranked = await self._call(self.client.rerank(query, documents, model=triton_model, normalize=normalize,
                                                     max_length=max_length))
        scores = [0.0] * len(documents)
        for index, score in ranked:
            scores[index] = score
        return scores

    async def check_lengths(self, texts: Sequence[str], limit: int, what: str) -> None:
        """`ApiError` naming the first text over `limit` tokens, with its length (TEI's `truncate: false`)."""
        tokenized = await self.tokenize(texts, max_length=POSITION_LIMIT)
        for index, tokens in enumerate(tokenized):
            if len(tokens.ids) > limit or tokens.truncated:
                length = f"more than {POSITION_LIMIT:,}" if tokens.truncated else f"{len(tokens.ids):,}"
                raise ApiError("invalid", f"{what}[{index}] is {length} tokens long, over the limit of {limit:,}; "
                                          "send it with \"truncate\": true to cut it to the limit")

    async def healthy(self) -> bool:
        """True when the embed model answers a real request."""
        try:
            await self.client.encode(["health check"], return_sparse=False)
        except BGEM3Error:
            return False
        return True

    async def _call(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except BGEM3Error as exc:
            raise from_client_error(exc) from None
