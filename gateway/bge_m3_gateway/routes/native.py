"""BGE-M3's own API, which no peer offers: all three outputs per text, and the five scores per pair."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bge_m3_client import contract as c
from bge_m3_gateway.routes.common import JSON, backend, served, settings, text_list
from bge_m3_gateway.schemas import (
    Format,
    Length,
    M3EmbedResponse,
    M3ExplainResponse,
    M3ScoreResponse,
    Text,
    TextList,
    Texts,
    responses,
)

router = APIRouter(tags=["BGE-M3"])


class M3EmbedRequest(BaseModel):
    """Texts and the outputs wanted; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    texts: Texts
    mode: Literal["query", "passage"] = Field(default="query", description="picks the default max length")
    max_length: Length | None = Field(default=None, description="tokens, overrides the mode's max length")
    return_dense: bool = True
    return_sparse: bool = True
    return_colbert: bool = False
    dense_format: Format = Field(default="float32", description="the dense vectors' numeric format (docs/formats.md)")
    colbert_format: Format = Field(default="float32", description="the ColBERT vectors' numeric format")


class M3ScoreRequest(BaseModel):
    """A query and passages, with BGE-M3's score weights and max lengths."""

    model_config = ConfigDict(extra="ignore")
    query: Text
    passages: TextList
    weights: list[float] = Field(default=list(c.DEFAULT_WEIGHTS), min_length=3, max_length=3,
                                 description="dense, sparse, colbert: finite, non-negative, dense + sparse > 0; "
                                             "the mixes are weighted means, so only their ratios matter")
    max_query_length: Length | None = None
    max_passage_length: Length | None = None


class M3ExplainRequest(BaseModel):
    """One query and one passage, with their max lengths."""

    model_config = ConfigDict(extra="ignore")
    query: Text
    passage: Text
    max_query_length: Length | None = None
    max_passage_length: Length | None = None


@router.post("/v1/m3/embed", summary="dense, sparse and ColBERT outputs per text",
             responses=responses("openai", M3EmbedResponse, "the outputs asked for, per text in input order"))
async def m3_embed(body: M3EmbedRequest, request: Request) -> JSON:
    """Per text: `dense`, `sparse` `{indices, values}` (Qdrant-ready), `colbert` (opt-in), `tokens`, `truncated`."""
    texts = text_list(body.texts, "texts", settings(request).max_inputs)
    results = await backend(request).embed(texts, passage=body.mode == "passage", dense=body.return_dense,
                                           sparse=body.return_sparse, colbert=body.return_colbert,
                                           max_length=body.max_length, dense_format=body.dense_format,
                                           colbert_format=body.colbert_format)
    tokens = sum(r.tokens for r in results)
    served(request, "/v1/m3/embed", len(texts), tokens)
    data = []
    for index, result in enumerate(results):
        item: dict[str, Any] = {"index": index, "tokens": result.tokens, "truncated": result.truncated}
        if body.return_dense:
            item["dense"] = result.dense
            if result.dense_scale is not None:
                item["dense_scale"] = result.dense_scale
        if body.return_sparse:
            item["sparse"] = result.sparse
        if body.return_colbert:
            item["colbert"] = result.colbert
            if result.colbert_scale is not None:
                item["colbert_scale"] = result.colbert_scale.reshape(-1)
        data.append(item)
    return JSON({"data": data, "usage": {"tokens": tokens}})


@router.post("/v1/m3/score", summary="BGE-M3's five scores for a query against passages",
             responses=responses("openai", M3ScoreResponse, "the five scores per passage, in passage order"))
async def m3_score(body: M3ScoreRequest, request: Request) -> JSON:
    """Per passage, in order: `dense`, `sparse`, `colbert`, `sparse+dense`, `colbert+sparse+dense`."""
    passages = text_list(body.passages, "passages", settings(request).max_inputs)
    scores = await backend(request).score_pairs([(body.query, p) for p in passages], body.weights,
                                                body.max_query_length, body.max_passage_length)
    served(request, "/v1/m3/score", len(passages))
    return JSON({"scores": [{"index": i, **s} for i, s in enumerate(scores)]})


@router.post("/v1/m3/explain", summary="why a passage scores as it does: lexical weights and ColBERT alignment",
             responses=responses("openai", M3ExplainResponse, "both texts' lexical weights and their ColBERT "
                                                              "alignment"))
async def m3_explain(body: M3ExplainRequest, request: Request) -> JSON:
    """For the query and the passage: `tokens`, `truncated` and `sparse` weights; and `colbert`: the
    similarity of every query vector with every passage vector (`rows` x `cols`, row-major; vector i
    stands for token i + 1, the tokens after `<s>` with `</s>` included), each query vector's best
    passage vector and its similarity, and the ColBERT score (their mean)."""
    gateway = backend(request)
    query, passage = await asyncio.gather(
        gateway.embed([body.query], passage=False, dense=False, sparse=True, colbert=True,
                      max_length=body.max_query_length),
        gateway.embed([body.passage], passage=True, dense=False, sparse=True, colbert=True,
                      max_length=body.max_passage_length))
    q, p = query[0], passage[0]
    assert q.colbert is not None and p.colbert is not None
    similarity = (q.colbert @ p.colbert.T).astype(np.float32)
    best = similarity.argmax(axis=1) if similarity.size else np.zeros(0, dtype=np.int64)
    best_similarity = similarity.max(axis=1) if similarity.size else np.zeros(0, dtype=np.float32)
    served(request, "/v1/m3/explain", 2, q.tokens + p.tokens)
    return JSON({
        "query": {"tokens": q.tokens, "truncated": q.truncated, "sparse": q.sparse},
        "passage": {"tokens": p.tokens, "truncated": p.truncated, "sparse": p.sparse},
        "colbert": {"rows": int(similarity.shape[0]), "cols": int(similarity.shape[1]),
                    "similarity": np.round(similarity, 4).reshape(-1), "best": best.astype(np.int32),
                    "best_similarity": best_similarity,
                    "score": float(best_similarity.mean()) if best_similarity.size else 0.0},
    })
