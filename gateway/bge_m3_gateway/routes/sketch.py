"""The seed FastAPI sketch's routes, wire-compatible: `POST /embeddings/` and `POST /rerank/`.

A request that runs past the gateway's deadline (30 s by default, as in the sketch) is answered
504 with `{"detail", "processing_time"}`, as the sketch did.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, WithJsonSchema

from bge_m3_client import contract as c
from bge_m3_client.adapters import SKETCH_RERANK_LENGTHS
from bge_m3_gateway.errors import ApiError
from bge_m3_gateway.routes.common import JSON, backend, served, settings, text_list
from bge_m3_gateway.schemas import SketchEmbeddings, SketchScores, TextList, responses

router = APIRouter(tags=["Seed sketch"])


class SketchEmbedRequest(BaseModel):
    """`{"sentences": [...]}`."""

    sentences: TextList


class SketchRerankRequest(BaseModel):
    """`{"sentence_pairs": [[query, passage], ...]}`."""

    sentence_pairs: Annotated[list[Any], WithJsonSchema({"type": "array", "minItems": 1, "items": {
        "type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}})]


@router.post("/embeddings/", summary="the sketch's dense embeddings",
             responses=responses("sketch", SketchEmbeddings, "one dense vector per sentence"))
async def sketch_embeddings(body: SketchEmbedRequest, request: Request) -> JSON:
    """`{"embeddings": [[float, ...], ...]}`."""
    sentences = text_list(body.sentences, "sentences", settings(request).max_inputs)
    results = await backend(request).embed(sentences, passage=True)
    served(request, "/embeddings/", len(sentences), sum(r.tokens for r in results))
    return JSON({"embeddings": [r.dense for r in results]})


@router.post("/rerank/", summary="the sketch's combined BGE-M3 scores",
             responses=responses("sketch", SketchScores, "one combined score per pair, in pair order"))
async def sketch_rerank(body: SketchRerankRequest, request: Request) -> JSON:
    """`{"scores": [...]}`: colbert+sparse+dense, weights 0.4/0.2/0.4, queries 256 and passages 5000 tokens."""
    pairs = body.sentence_pairs
    if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in pairs):
        raise ApiError("invalid", "'sentence_pairs' must be a list of [query, passage] string pairs",
                       "sentence_pairs")
    text_list([q for q, _ in pairs], "sentence_pairs", settings(request).max_inputs)
    scores = await backend(request).score_pairs([(q, p) for q, p in pairs], c.DEFAULT_WEIGHTS,
                                                *SKETCH_RERANK_LENGTHS)
    served(request, "/rerank/", len(pairs))
    return JSON({"scores": [s[c.COMBINED_SCORE] for s in scores]})
