"""Errors as each API family writes them, and the mapping from client errors to HTTP statuses.

Every error body is JSON in the style of the route it came through: OpenAI routes
`{"error": {"message", "type", "param", "code"}}`, TEI routes `{"error", "error_type"}`, Cohere's
`{"message"}`, the seed sketch's FastAPI `{"detail"}`. None carries a traceback or a path.
"""

from __future__ import annotations

from typing import Any

from bge_m3_client import (
    BGEM3Error,
    InvalidInputError,
    ModelNotReadyError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerUnavailableError,
)

RETRY_AFTER_S = 1

# kind: (HTTP status, OpenAI type, TEI error_type)
KINDS: dict[str, tuple[int, str, str]] = {
    "invalid": (422, "invalid_request_error", "Validation"),
    "not_found": (404, "invalid_request_error", "Validation"),
    "auth": (401, "authentication_error", "Unauthorized"),
    "too_large": (413, "invalid_request_error", "Validation"),
    "rejected": (429, "rate_limit_error", "Overloaded"),
    "unavailable": (503, "service_unavailable", "Unhealthy"),
    "timeout": (504, "timeout", "Timeout"),
    "internal": (500, "server_error", "Backend"),
}


class ApiError(Exception):
    """An error the gateway answers with: a kind (which sets the status) and a message safe to show."""

    def __init__(self, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param

    @property
    def headers(self) -> dict[str, str]:
        """`Retry-After` on overload and unavailability, so SDKs back off and retry."""
        return {"Retry-After": str(RETRY_AFTER_S)} if self.kind in ("rejected", "unavailable") else {}


def from_client_error(exc: BGEM3Error) -> ApiError:
    """The API error for what the Triton client raised."""
    kinds: list[tuple[type[BGEM3Error], str]] = [
        (InvalidInputError, "invalid"), (RequestRejectedError, "rejected"), (ServerUnavailableError, "unavailable"),
        (ModelNotReadyError, "unavailable"), (RequestTimeoutError, "timeout")]
    kind = next((name for cls, name in kinds if isinstance(exc, cls)), "internal")
    return ApiError(kind, _without_positions(str(exc)))


def _without_positions(message: str) -> str:
    """Drop the client's 'texts a..b failed: ' prefix; the route adds its own context."""
    head, sep, rest = message.partition(" failed: ")
    return rest if sep and head.startswith("texts ") else message


STYLES = ("openai", "tei", "cohere", "sketch")
# TEI serves embeddings at `/` too (its router maps the root to the embed route for embedding models).
TEI_PATHS = frozenset({"/", "/embed", "/embed_sparse", "/embed_all", "/rerank", "/tokenize", "/info", "/health"})
SKETCH_PATHS = frozenset({"/embeddings/", "/rerank/"})


def style_for(path: str) -> str:
    """Which API family a path belongs to, for the shape of its errors."""
    if path in ("/v2/rerank", "/v2/embed"):
        return "cohere"
    if path in TEI_PATHS:
        return "tei"
    if path in SKETCH_PATHS:
        return "sketch"
    return "openai"


def invalid_status(style: str) -> int:
    """The status of invalid input: OpenAI and Cohere answer bad requests with 400, TEI and FastAPI with 422."""
    return 400 if style in ("openai", "cohere") else KINDS["invalid"][0]


def error_body(style: str, error: ApiError, extra: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for `error` in the API style `style`."""
    status, openai_type, tei_type = KINDS[error.kind]
    if error.kind == "invalid":
        status = invalid_status(style)
    body: dict[str, Any]
    if style == "openai":
        body = {"error": {"message": error.message, "type": openai_type, "param": error.param, "code": error.kind}}
    elif style == "tei":
        body = {"error": error.message, "error_type": tei_type}
    elif style == "cohere":
        body = {"message": error.message}
    else:
        body = {"detail": error.message}
    body.update(extra or {})
    return status, body
