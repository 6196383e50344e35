"""BGE-M3's own API, which no peer offers: all three outputs per text, and the five scores per pair."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bge_m3_client import contract as c
from bge_m3_gateway.routes.common import JSON, backend, served, settings, text_list

router = APIRouter(tags=["BGE-M3"])


class M3EmbedRequest(BaseModel):
    """Texts and the outputs wanted; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    texts: str | list[Any]
    mode: Literal["query", "passage"] = Field(default="query", description="picks the default max length")
    max_length: int | None = Field(default=None, description="tokens, overrides the mode's max length")
    return_dense: bool = True
    return_sparse: bool = True
    return_colbert: bool = False


class M3ScoreRequest(BaseModel):
    """A query and passages, with BGE-M3's score weights and max lengths."""

    model_config = ConfigDict(extra="ignore")
    query: str
    passages: list[Any]
    weights: list[float] = Field(default=list(c.DEFAULT_WEIGHTS), description="dense, sparse, colbert")
    max_query_length: int | None = None
    max_passage_length: int | None = None


@router.post("/v1/m3/embed", summary="dense, sparse and ColBERT outputs per text")
async def m3_embed(body: M3EmbedRequest, request: Request) -> JSON:
    """Per text: `dense`, `sparse` `{indices, values}` (Qdrant-ready), `colbert` (opt-in), `tokens`, `truncated`."""
    texts = text_list(body.texts, "texts", settings(request).max_inputs)
    results = await backend(request).embed(texts, passage=body.mode == "passage", dense=body.return_dense,
                                           sparse=body.return_sparse, colbert=body.return_colbert,
                                           max_length=body.max_length)
    tokens = sum(r.tokens for r in results)
    served(request, "/v1/m3/embed", len(texts), tokens)
    data = []
    for index, result in enumerate(results):
        item: dict[str, Any] = {"index": index, "tokens": result.tokens, "truncated": result.truncated}
        if body.return_dense:
            item["dense"] = result.dense
        if body.return_sparse:
            item["sparse"] = result.sparse
        if body.return_colbert:
            item["colbert"] = result.colbert
        data.append(item)
    return JSON({"data": data, "usage": {"tokens": tokens}})


@router.post("/v1/m3/score", summary="BGE-M3's five scores for a query against passages")
async def m3_score(body: M3ScoreRequest, request: Request) -> JSON:
    """Per passage, in order: `dense`, `sparse`, `colbert`, `sparse+dense`, `colbert+sparse+dense`."""
    passages = text_list(body.passages, "passages", settings(request).max_inputs)
    scores = await backend(request).score_pairs([(body.query, p) for p in passages], body.weights,
                                                body.max_query_length, body.max_passage_length)
    served(request, "/v1/m3/score", len(passages))
    return JSON({"scores": [{"index": i, **s} for i, s in enumerate(scores)]})
