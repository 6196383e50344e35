"""OpenAI's embeddings API: `POST /v1/embeddings` and `GET /v1/models`, as the `openai` SDK calls them."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bge_m3_gateway.backend import EMBED_NAME
from bge_m3_gateway.errors import ApiError
from bge_m3_gateway.routes.common import JSON, backend, check_dimensions, served, settings, text_list
from bge_m3_gateway.schemas import Count, EmbeddingsResponse, FilledTexts, ModelList, Text, responses

router = APIRouter(tags=["OpenAI"])


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request; unknown fields (such as `user`) are ignored."""

    model_config = ConfigDict(extra="ignore")
    input: FilledTexts = Field(description="a string or a list of strings (token-id lists are refused)")
    model: Text | None = Field(default=None, description="echoed back; any name is served by BGE-M3")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Count | None = Field(default=None, description="only the model's width (1024 for BGE-M3)")
    input_type: Literal["query", "passage"] = Field(
        default="passage", description="vendor extension (NIM's name): `query` truncates at the query max "
                                       "length (512), `passage` at the passage max length (8192)")


TOKEN_IDS_REFUSED = (
    "'input' holds token ids; this server takes text only, since token ids from another tokenizer (such as "
    "tiktoken's) mean nothing to BGE-M3. LangChain's OpenAIEmbeddings sends tiktoken ids unless it is "
    "created with check_embedding_ctx_length=False.")


def input_texts(value: Any, max_inputs: int) -> list[str]:
    """The request's texts; token-id lists get an error that says why they are refused."""
    if isinstance(value, list) and value and all(isinstance(x, (int, list)) and not isinstance(x, bool)
                                                 for x in value):
        raise ApiError("invalid", TOKEN_IDS_REFUSED, "input")
    return text_list(value, "input", max_inputs, allow_empty=False)


@router.post("/v1/embeddings", summary="OpenAI embeddings (dense vectors)",
             responses=responses("openai", EmbeddingsResponse, "one dense vector per input, in input order"))
async def embeddings(body: EmbeddingsRequest, request: Request) -> JSON:
    """Dense BGE-M3 vectors for each input, in OpenAI's response shape."""
    texts = input_texts(body.input, settings(request).max_inputs)
    results = await backend(request).embed(texts, passage=body.input_type == "passage")
    check_dimensions(body.dimensions, results)
    tokens = sum(r.tokens for r in results)
    served(request, "/v1/embeddings", len(texts), tokens)
    data = [{"object": "embedding", "index": i, "embedding": _encoded(r.dense, body.encoding_format)}
            for i, r in enumerate(results)]
    return JSON({"object": "list", "data": data, "model": body.model or EMBED_NAME,
                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _encoded(vector: np.ndarray | None, encoding: str) -> Any:
    assert vector is not None
    if encoding == "base64":  # little-endian float32 bytes, as OpenAI sends them
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


@router.get("/v1/models", summary="the served models",
            responses=responses("openai", ModelList, "`bge-m3`, and `bge-reranker` when a cross-encoder is served"))
async def models(request: Request) -> JSON:
    """OpenAI's model list: `bge-m3`, and `bge-reranker` when a cross-encoder is deployed."""
    names = (await backend(request).served()).names()
    created = int(request.app.state.started)
    return JSON({"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                             "owned_by": "bge-m3-triton"} for name in names]})
