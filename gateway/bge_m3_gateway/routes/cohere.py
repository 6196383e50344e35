"""Cohere's v2 embed API: `POST /v2/embed`, as the `cohere` SDK's `ClientV2.embed` calls it.

`embedding_types` (`float`, `int8`, `uint8`, `binary`, `ubinary`, `base64`) are the convention vector
databases and SDKs read; every type asked for comes from one forward pass (the dense vectors in float32
from Triton, each type made from them as bge_m3_client/formats.py defines it; `base64` is the float32
vector's little-endian bytes). `input_type` `search_query` embeds as a query, the others as passages.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bge_m3_client import formats
from bge_m3_gateway.errors import ApiError
from bge_m3_gateway.routes.common import JSON, backend, check_dimensions, served, settings, text_list
from bge_m3_gateway.schemas import CohereEmbedResponse, Count, FilledTextList, Length, Text, responses

router = APIRouter(tags=["Cohere"])
EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
FORMAT_OF = {"int8": formats.INT8, "uint8": formats.UINT8, "binary": formats.BINARY, "ubinary": formats.UBINARY}


class TextContent(BaseModel):
    """One part of an input's content: text (images are not served: BGE-M3 embeds text)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Text


class EmbedInput(BaseModel):
    """Cohere's `inputs` item: an input made of content parts, embedded as their text joined."""

    model_config = ConfigDict(extra="ignore")
    content: list[TextContent] = Field(min_length=1)


class CohereEmbedRequest(BaseModel):
    """Cohere's v2 embed request; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: Text | None = Field(default=None, description="any name is served by BGE-M3")
    input_type: Literal["search_document", "search_query", "classification", "clustering"] = Field(
        default="search_document", description="search_query embeds as a query, the others as passages")
    texts: FilledTextList | None = None
    inputs: list[EmbedInput] | None = Field(default=None, min_length=1)
    embedding_types: list[EmbeddingType] = Field(default=["float"], min_length=1)
    truncate: Literal["NONE", "END"] = Field(default="END", description="END cuts at the max length; NONE refuses "
                                                                       "a text over it")
    max_tokens: Length | None = Field(default=None, description="cut each text here (with truncate END)")
    output_dimension: Count | None = Field(default=None, description="only the model's width (1024)")


@router.post("/v2/embed", summary="Cohere v2 embed: dense vectors in the types asked for",
             responses=responses("cohere", CohereEmbedResponse, "each type asked for, one vector per text"))
async def cohere_embed(body: CohereEmbedRequest, request: Request) -> JSON:
    """Cohere's response: `id`, `embeddings` by type, `texts`, `meta`."""
    texts = _texts(body, settings(request).max_inputs)
    gateway = backend(request)
    passage = body.input_type != "search_query"
    results = await gateway.embed(texts, passage=passage, max_length=body.max_tokens)
    check_dimensions(body.output_dimension, results)
    if body.truncate == "NONE" and any(r.truncated for r in results):
        served_models = await gateway.served()
        limit = body.max_tokens or (served_models.passage_max_length if passage else served_models.query_max_length)
        await gateway.check_lengths([t for t, r in zip(texts, results) if r.truncated], limit, "texts")
        raise ApiError("invalid", f"a text is over the limit of {limit:,} tokens; send truncate END to cut it")
    dense = np.stack([r.dense for r in results if r.dense is not None]).astype(np.float32)
    tokens = sum(r.tokens for r in results)
    served(request, "/v2/embed", len(texts), tokens)
    embeddings: dict[str, Any] = {}
    for kind in dict.fromkeys(body.embedding_types):
        if kind == "float":
            embeddings[kind] = dense
        elif kind == "base64":
            embeddings[kind] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in dense]
        else:
            embeddings[kind] = formats.encode(dense, FORMAT_OF[kind])[0]
    return JSON({"id": str(uuid.uuid4()), "response_type": "embeddings_by_type", "embeddings": embeddings,
                 "texts": texts, "meta": {"api_version": {"version": "2"},
                                          "billed_units": {"input_tokens": tokens}}})


def _texts(body: CohereEmbedRequest, max_inputs: int) -> list[str]:
    """`texts`, or the text of each of `inputs` (its text parts joined): one of the two."""
    if (body.texts is None) == (body.inputs is None):
        raise ApiError("invalid", "send either 'texts' or 'inputs' (images are not served: BGE-M3 embeds text)",
                       "texts")
    if body.texts is not None:
        return text_list(body.texts, "texts", max_inputs, allow_empty=False)
    joined = [" ".join(part.text for part in item.content) for item in body.inputs or []]
    return text_list(joined, "inputs", max_inputs, allow_empty=False)
