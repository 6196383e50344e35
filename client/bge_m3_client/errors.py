"""Typed client errors, each carrying the server's message."""

from __future__ import annotations


class BGEM3Error(Exception):
    """Base of every error the client raises."""

    retryable = False

    def __init__(self, message: str, failed: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.failed = failed  # [start, stop) of the input positions the error covers, when known


class ServerUnavailableError(BGEM3Error):
    """The server could not be reached or answered UNAVAILABLE."""

    retryable = True


class ModelNotReadyError(BGEM3Error):
    """The server answers, but the model is not loaded or not ready."""


class RequestRejectedError(BGEM3Error):
    """The queue policy rejected the request (queue full or queue timeout); safe to retry later."""

    retryable = True


class RequestTimeoutError(BGEM3Error):
    """The client gave up waiting for the response."""


class InvalidInputError(BGEM3Error):
    """The server refused the input as invalid (HTTP 400 / INVALID_ARGUMENT)."""


class InferenceError(BGEM3Error):
    """The model failed while serving a valid request."""


def classify(status: str | None, message: str) -> type[BGEM3Error]:
    """Map a Triton status (HTTP code or gRPC status name) and message to an error type."""
    status = (status or "").upper()
    lowered = message.lower()
    if "exceeds maximum queue size" in lowered or "request timeout expired" in lowered:
        return RequestRejectedError
    if "deadline" in lowered or "timed out" in lowered or "timeout" in status or "DEADLINE" in status:
        return RequestTimeoutError
    if ("not ready" in lowered or "unknown model" in lowered or "is not found" in lowered
            or status in ("404", "STATUSCODE.NOT_FOUND")):
        return ModelNotReadyError
    if status in ("400", "STATUSCODE.INVALID_ARGUMENT"):
        return InvalidInputError
    if status in ("503", "STATUSCODE.UNAVAILABLE") or "connect" in lowered or "unavailable" in lowered:
        return ServerUnavailableError
    return InferenceError
