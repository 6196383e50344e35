"""Hugging Face TEI's API: `/embed`, `/embed_sparse`, `/embed_all`, `/rerank`, `/tokenize`, `/info`.

As in TEI, `truncate` is false unless asked: an input over the limit is an error that says how
long it was, never a silent cut. TEI's `/embed_all` returns every token's vector; for BGE-M3
that is its ColBERT vectors (one per token after `<s>`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bge_m3_client import EmbeddingResult
from bge_m3_client import contract as c
from bge_m3_gateway.backend import Backend
from bge_m3_gateway.errors import ApiError
from bge_m3_gateway.routes.common import (
    JSON,
    backend,
    check_dimensions,
    served,
    settings,
    text_list,
    top_indices,
)
from bge_m3_gateway.schemas import (
    Count,
    FilledTextList,
    FilledTexts,
    Info,
    RankTEI,
    SimpleToken,
    SparseWeight,
    Text,
    Texts,
    Vector,
    responses,
)

router = APIRouter(tags=["TEI"])
SPECIAL_TOKENS = {0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>"}  # XLM-R's, which BGE-M3 uses


class EmbedRequest(BaseModel):
    """TEI's `/embed`, `/embed_sparse` and `/embed_all` body; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    inputs: FilledTexts
    truncate: bool | None = Field(default=False, description="cut inputs over the limit (default: refuse them)")
    truncation_direction: Literal["Right", "right", "Left", "left"] = "Right"
    normalize: bool = Field(default=True, description="only true: BGE-M3's dense vectors are served L2-normalized")
    dimensions: Count | None = None


class RerankRequest(BaseModel):
    """TEI's `/rerank` body."""

    model_config = ConfigDict(extra="ignore")
    query: Text
    texts: FilledTextList
    raw_scores: bool = Field(default=False, description="cross-encoder logits instead of their sigmoid")
    return_text: bool = False
    truncate: bool | None = False
    truncation_direction: Literal["Right", "right", "Left", "left"] = "Right"


class TokenizeRequest(BaseModel):
    """TEI's `/tokenize` body."""

    model_config = ConfigDict(extra="ignore")
    inputs: Texts
    add_special_tokens: bool = True


async def _embed(body: EmbedRequest, request: Request, route: str, dense: bool = False, sparse: bool = False,
                 colbert: bool = False) -> list[EmbeddingResult]:
    texts = text_list(body.inputs, "inputs", settings(request).max_inputs, allow_empty=False)
    if body.truncation_direction.lower() != "right":
        raise ApiError("invalid", "only truncation_direction 'Right' is supported", "truncation_direction")
    if not body.normalize:
        raise ApiError("invalid", "BGE-M3's dense vectors are served L2-normalized only; send normalize: true",
                       "normalize")
    gateway = backend(request)
    results = await gateway.embed(texts, passage=True, dense=dense or body.dimensions is not None, sparse=sparse,
                                  colbert=colbert)
    check_dimensions(body.dimensions, results)
    if not body.truncate and any(r.truncated for r in results):
        await _refuse_long(gateway, [t for t, r in zip(texts, results) if r.truncated], "inputs")
    served(request, route, len(texts), sum(r.tokens for r in results))
    return results


async def _refuse_long(gateway: Backend, texts: list[str], what: str) -> None:
    limit = (await gateway.served()).passage_max_length
    await gateway.check_lengths(texts, limit, what)
    raise ApiError("invalid", f"an input is over the limit of {limit:,} tokens; send \"truncate\": true to cut it")


@router.post("/embed", summary="TEI: dense vectors",
             responses=responses("tei", list[Vector], "one L2-normalized CLS vector per input"))
async def embed(body: EmbedRequest, request: Request) -> JSON:
    """`[[float, ...], ...]`: one L2-normalized CLS vector per input."""
    results = await _embed(body, request, "/embed", dense=True)
    return JSON([r.dense for r in results])


@router.post("/", summary="TEI: dense vectors (TEI's root route, as `/embed`)",
             responses=responses("tei", list[Vector], "one L2-normalized CLS vector per input"))
async def embed_at_root(body: EmbedRequest, request: Request) -> JSON:
    """TEI maps its root to the embed route of an embedding model, and clients given TEI's base URL post
    there; `GET /` stays the playground."""
    results = await _embed(body, request, "/", dense=True)
    return JSON([r.dense for r in results])


@router.post("/embed_sparse", summary="TEI: sparse lexical weights",
             responses=responses("tei", list[list[SparseWeight]], "each input's lexical weights by token id"))
async def embed_sparse(body: EmbedRequest, request: Request) -> JSON:
    """`[[{"index": token_id, "value": weight}, ...], ...]`: BGE-M3's lexical weights."""
    results = await _embed(body, request, "/embed_sparse", sparse=True)
    return JSON([[{"index": i, "value": v} for i, v in zip(r.sparse["indices"], r.sparse["values"])]
                 if r.sparse else [] for r in results])


@router.post("/embed_all", summary="TEI: token vectors (BGE-M3's ColBERT vectors)",
             responses=responses("tei", list[list[Vector]], "each input's ColBERT vectors, one per token after "
                                                             "`<s>`"))
async def embed_all(body: EmbedRequest, request: Request) -> JSON:
    """`[[[float, ...] per token], ...]`: the ColBERT vectors of each input."""
    results = await _embed(body, request, "/embed_all", colbert=True)
    return JSON([r.colbert for r in results])


@router.post("/rerank", summary="TEI: rerank texts against a query",
             responses=responses("tei", list[RankTEI], "the texts' indices and scores, best first"))
async def rerank(body: RerankRequest, request: Request) -> JSON:
    """`[{"index", "score", "text"?}, ...]`, best first."""
    texts = text_list(body.texts, "texts", settings(request).max_inputs, allow_empty=False)
    if body.truncation_direction.lower() != "right":
        raise ApiError("invalid", "only truncation_direction 'Right' is supported", "truncation_direction")
    gateway = backend(request)
    if not body.truncate:
        await _check_rerank_lengths(gateway, body.query, texts)
    scores = await gateway.rerank_scores(body.query, texts, None, normalize=not body.raw_scores)
    served(request, "/rerank", len(texts))
    return JSON([{"index": i, "score": scores[i], **({"text": texts[i]} if body.return_text else {})}
                 for i in top_indices(scores, None)])


async def _check_rerank_lengths(gateway: Backend, query: str, texts: list[str]) -> None:
    served_models = await gateway.served()
    if served_models.rerank_model(None) == c.CROSS_ENCODER_MODEL:  # pairs: <s> q </s></s> p </s>
        tokenized = await gateway.tokenize([query, *texts])
        limit = served_models.cross_encoder_max_length
        for index, tokens in enumerate(tokenized[1:]):
            length = len(tokenized[0].ids) + len(tokens.ids)
            if length > limit:
                raise ApiError("invalid", f"query + texts[{index}] is {length:,} tokens long, over the cross-encoder's "
                                          f"limit of {limit:,}; send \"truncate\": true to cut it")
        return
    await gateway.check_lengths([query], served_models.query_max_length, "query")
    await gateway.check_lengths(texts, served_models.passage_max_length, "texts")


@router.post("/tokenize", summary="TEI: the model's tokens with character offsets",
             responses=responses("tei", list[list[SimpleToken]], "each input's tokens; a token's `text` is the "
                                 "input from `start` to `stop`, and spans may overlap (XLM-R's lone `▁` piece "
                                 "shares its span with the next token's first character)"))
async def tokenize(body: TokenizeRequest, request: Request) -> JSON:
    """`[[{"id", "text", "special", "start", "stop"}, ...], ...]`; offsets are character positions."""
    texts = text_list(body.inputs, "inputs", settings(request).max_inputs)
    tokenized = await backend(request).tokenize(texts)
    served(request, "/tokenize", len(texts), sum(len(t.ids) for t in tokenized))
    out = []
    for text, tokens in zip(texts, tokenized):
        row = []
        for token_id, (start, stop) in zip(tokens.ids, tokens.spans):
            special = start < 0
            if special and not body.add_special_tokens:
                continue
            row.append({"id": token_id, "text": SPECIAL_TOKENS.get(token_id, "") if special else text[start:stop],
                        "special": special, "start": None if special else start, "stop": None if special else stop})
        out.append(row)
    return JSON(out)


@router.get("/info", summary="TEI: what is served", responses=responses("tei", Info, "the served models"))
async def info(request: Request) -> JSON:
    """TEI's `/info`: model id, dtype, limits."""
    served_models = await backend(request).served()
    model_type: dict[str, Any] = {"embedding": {"pooling": "cls"}}
    return JSON({"model_id": served_models.embed_checkpoint, "model_sha": None, "model_dtype": served_models.dtype,
                 "model_type": model_type, "max_input_length": served_models.passage_max_length,
                 # TEI's budget bounds a request too; ours is split into the model's own sub-batches, so
                 # a request may hold as many texts as the gateway takes, each at the passage limit.
                 "max_batch_tokens": settings(request).max_inputs * served_models.passage_max_length,
                 "max_client_batch_size": settings(request).max_inputs,
                 "max_concurrent_requests": settings(request).concurrency,
                 "reranker_id": served_models.cross_encoder_checkpoint,
                 "outputs": ["dense", "sparse", "colbert"], "version": "bge-m3-triton"})
