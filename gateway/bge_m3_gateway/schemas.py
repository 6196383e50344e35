"""What the OpenAPI schema says of the wire: request field types, response bodies and error bodies.

The routes answer with `JSON` (orjson over numpy arrays), so FastAPI never builds these models at run
time; they exist so `/openapi.json` describes each route's real request, response and error shapes
(generated clients, API consoles and the property-based tests read it). The tests check every
response against them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from bge_m3_client import InvalidInputError
from bge_m3_client import contract as c
from bge_m3_client.packing import utf8

UNICODE_ERROR = "unicode"


def _valid_unicode(value: str) -> str:
    try:
        utf8(value, "it")
    except InvalidInputError as exc:
        raise PydanticCustomError(UNICODE_ERROR, str(exc).removeprefix("it ")) from None
    return value


# A string field that must be encodable as UTF-8 (no lone surrogate), checked as the body is read.
Text = Annotated[str, AfterValidator(_valid_unicode)]
# Text inputs: routes take any list and check its items themselves (`routes.common.text_list`) to name
# the item at fault; the schema says what is accepted.
_STRING: dict[str, Any] = {"type": "string"}
_FILLED: dict[str, Any] = {"type": "string", "minLength": 1}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": 1}


Texts = Annotated[str | list[Any], WithJsonSchema({"anyOf": [_STRING, _list(_STRING)]})]
FilledTexts = Annotated[str | list[Any], WithJsonSchema({"anyOf": [_FILLED, _list(_FILLED)]})]  # no empty text
TextList = Annotated[list[Any], WithJsonSchema(_list(_STRING))]
FilledTextList = Annotated[list[Any], WithJsonSchema(_list(_FILLED))]
# Token lengths: bounded at the edge, so nothing out of range reaches Triton (whose request
# parameters are 64-bit); the served model's own limit may be lower, and it answers that itself.
Length = Annotated[int, Field(ge=2, le=c.MAX_TOKENS)]
Format = Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"]  # bge_m3_client.formats.FORMATS
Count = Annotated[int, Field(ge=1, le=2**31 - 1)]


# ---- error bodies, one per API family ----

class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """OpenAI's error body."""

    error: OpenAIErrorDetail


class TEIError(BaseModel):
    """TEI's error body."""

    error: str
    error_type: str


class CohereError(BaseModel):
    """Cohere's error body."""

    message: str


class SketchError(BaseModel):
    """FastAPI's `{"detail"}`, as the seed sketch answered; `processing_time` on a 504."""

    detail: str
    processing_time: float | None = None


ERROR_MODELS: dict[str, type[BaseModel]] = {"openai": OpenAIError, "tei": TEIError, "cohere": CohereError,
                                            "sketch": SketchError}


def responses(style: str, ok: Any, ok_description: str) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route: its 200 body and every error status it can answer, in its API's shape
    (the statuses `errors.KINDS` sets, with OpenAI and Cohere answering bad input with 400)."""
    from bge_m3_gateway.errors import KINDS, invalid_status

    error = ERROR_MODELS[style]
    statuses = {invalid_status(style) if kind == "invalid" else status for kind, (status, _, _) in KINDS.items()}
    described: dict[int | str, dict[str, Any]] = {200: {"model": ok, "description": ok_description}}
    for status in sorted(statuses):
        described[status] = {"model": error, "description": _STATUS_WORDS[status]}
    return described


_STATUS_WORDS = {
    400: "the request is invalid: the message names the field", 401: "no valid API key",
    404: "no such route", 413: "the body is over the gateway's limit",
    422: "the request is invalid: the message names the field",
    429: "Triton's queue is full: retry after `Retry-After` seconds", 500: "the model failed on valid input",
    503: "Triton or its model is unavailable: retry after `Retry-After` seconds",
    504: "the request took longer than the gateway's deadline",
}


# ---- response bodies ----

Vector = list[float]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Vector | str = Field(description="floats, or base64 of little-endian float32 bytes")


class EmbeddingsResponse(BaseModel):
    """OpenAI's embeddings list."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    """OpenAI's model list."""

    object: Literal["list"]
    data: list[ModelCard]


class SparseWeight(BaseModel):
    index: int
    value: float


class RankTEI(BaseModel):
    index: int
    score: float
    text: str | None = None


class SimpleToken(BaseModel):
    """A token as TEI's `/tokenize` writes it. `text` is the input's characters from `start` to `stop`;
    the tokenizer may give a piece of its own (XLM-R's lone `▁`) a span that overlaps the next token's."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class Info(BaseModel):
    """TEI's `/info`."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict[str, Any]
    max_input_length: int
    max_batch_tokens: int
    max_client_batch_size: int
    max_concurrent_requests: int
    reranker_id: str | None
    outputs: list[str]
    version: str


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class CohereRerankResponse(BaseModel):
    """Cohere's v2 rerank response."""

    id: str
    results: list[RerankResult]
    meta: dict[str, Any]


class CohereEmbeddings(BaseModel):
    """The vectors of each type asked for."""

    float_: list[Vector] | None = Field(default=None, alias="float")
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None
    base64: list[str] | None = None


class CohereEmbedResponse(BaseModel):
    """Cohere's v2 embed response."""

    id: str
    response_type: Literal["embeddings_by_type"]
    embeddings: CohereEmbeddings
    texts: list[str]
    meta: dict[str, Any]


class JinaRerankResponse(BaseModel):
    """Jina's (and vLLM's) rerank response."""

    id: str
    model: str
    results: list[RerankResult]


class Sparse(BaseModel):
    """Lexical weights, Qdrant's sparse-vector shape."""

    indices: list[int]
    values: list[float]


class M3Embedding(BaseModel):
    index: int
    tokens: int
    truncated: bool
    dense: Vector | list[int] | None = Field(default=None, description="floats, or integers in an integer format")
    dense_scale: float | None = Field(default=None, description="with dense_format int8 or uint8")
    sparse: Sparse | None = None
    colbert: list[Vector] | list[list[int]] | None = None
    colbert_scale: list[float] | None = Field(default=None, description="with colbert_format int8 or uint8, one "
                                                                        "per ColBERT vector")


class M3Usage(BaseModel):
    tokens: int


class M3EmbedResponse(BaseModel):
    data: list[M3Embedding]
    usage: M3Usage


class M3Scores(BaseModel):
    index: int
    dense: float
    sparse: float
    colbert: float
    sparse_dense: float = Field(alias="sparse+dense")
    colbert_sparse_dense: float = Field(alias="colbert+sparse+dense")


class M3ScoreResponse(BaseModel):
    scores: list[M3Scores]


class ExplainedText(BaseModel):
    tokens: int
    truncated: bool
    sparse: Sparse


class Alignment(BaseModel):
    rows: int
    cols: int
    similarity: list[float] = Field(description="rows x cols, row-major")
    best: list[int]
    best_similarity: list[float]
    score: float


class M3ExplainResponse(BaseModel):
    query: ExplainedText
    passage: ExplainedText
    colbert: Alignment


class SketchEmbeddings(BaseModel):
    embeddings: list[Vector]


class SketchScores(BaseModel):
    scores: list[float]


class Health(BaseModel):
    status: Literal["ok", "unhealthy"]
    error: str | None = None
