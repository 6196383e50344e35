"""Rerank APIs: Cohere v2 `POST /v2/rerank` and the Jina/vLLM-style `POST /v1/rerank`.

The cross-encoder scores when it is deployed, else BGE-M3's combined colbert+sparse+dense score;
the `model` field picks BGE-M3's score by naming it (`bge-m3`) when both are served.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from bge_m3_gateway.routes.common import JSON, backend, served, settings, text_list, top_indices
from bge_m3_gateway.schemas import CohereRerankResponse, Count, JinaRerankResponse, Length, Text, responses

router = APIRouter(tags=["Rerank (Cohere, Jina)"])


class RerankRequest(BaseModel):
    """The shared body of Cohere's v2 and Jina's rerank requests; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    query: Text
    documents: Annotated[list[Any], WithJsonSchema({"type": "array", "minItems": 1, "items": {"anyOf": [
        {"type": "string"}, {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}]}})
    ] = Field(description="strings, or objects with a 'text' field")
    model: Text | None = Field(default=None, description="`bge-reranker` (default when deployed) or `bge-m3`")
    top_n: Count | None = Field(default=None, description="how many results; past the end returns all")
    return_documents: bool = False
    max_tokens_per_doc: Length | None = Field(default=None, description="truncate each document (or pair) here")


async def ranked(body: RerankRequest, request: Request, route: str) -> list[dict[str, Any]]:
    """Results, best first, as both APIs write them."""
    raw = [d.get("text") if isinstance(d, dict) else d for d in body.documents]
    documents = text_list(raw, "documents", settings(request).max_inputs)
    scores = await backend(request).rerank_scores(body.query, documents, body.model,
                                                  max_length=body.max_tokens_per_doc)
    served(request, route, len(documents))
    results = []
    for index in top_indices(scores, body.top_n):
        item: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if body.return_documents:
            item["document"] = {"text": documents[index]}
        results.append(item)
    return results


@router.post("/v2/rerank", summary="Cohere v2 rerank",
             responses=responses("cohere", CohereRerankResponse, "the documents' indices and scores, best first"))
async def cohere_rerank(body: RerankRequest, request: Request) -> JSON:
    """Cohere's v2 response: `id`, `results` with `index` and `relevance_score`, `meta`."""
    results = await ranked(body, request, "/v2/rerank")
    return JSON({"id": str(uuid.uuid4()), "results": results,
                 "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}})


@router.post("/v1/rerank", summary="Jina / vLLM rerank",
             responses=responses("openai", JinaRerankResponse, "the documents' indices and scores, best first"))
async def jina_rerank(body: RerankRequest, request: Request) -> JSON:
    """Jina's (and vLLM's) response: `model` and `results` with `index`, `relevance_score`, `document`."""
    results = await ranked(body, request, "/v1/rerank")
    return JSON({"id": str(uuid.uuid4()), "model": body.model or "bge-reranker", "results": results})
