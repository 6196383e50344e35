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


# Triton's status codes: HTTP statuses and gRPC status names (tritonclient gives "StatusCode.NAME").
_BY_STATUS: dict[str, type[BGEM3Error]] = {
    "400": InvalidInputError, "INVALID_ARGUMENT": InvalidInputError,
    "404": ModelNotReadyError, "NOT_FOUND": ModelNotReadyError,
    "429": RequestRejectedError, "RESOURCE_EXHAUSTED": RequestRejectedError,
    "503": RequestRejectedError, "UNAVAILABLE": RequestRejectedError,
    "504": RequestTimeoutError, "DEADLINE_EXCEEDED": RequestTimeoutError,
    "500": InferenceError, "INTERNAL": InferenceError, "CANCELLED": InferenceError, "UNKNOWN": InferenceError,
}


def classify(status: str | None, message: str) -> type[BGEM3Error]:
    """Map a Triton status (an HTTP code or a gRPC status name) to an error type.

    The code decides. The message is read only where one code means two things: Triton answers an
    unknown model with HTTP 400, and gRPC says UNAVAILABLE also when its channel never reached the
    server. Without a status the failure happened on this side: a timeout is `RequestTimeoutError`,
    anything else an `InferenceError` that is not retried (tritonclient raises status-less errors
    while it builds a request, such as a parameter out of range: sending it again cannot help).
    Connection failures come as `OSError`s (`transport.to_error`) or as gRPC's UNAVAILABLE.
    """
    code = (status or "").upper().removeprefix("STATUSCODE.")
    lowered = message.lower()
    kind = _BY_STATUS.get(code)
    if kind is InvalidInputError and "unknown model" in lowered:
        return ModelNotReadyError
    if code == "UNAVAILABLE" and ("failed to connect" in lowered or "connection refused" in lowered):
        return ServerUnavailableError
    if kind is not None:
        return kind
    if code:
        return InferenceError
    return RequestTimeoutError if ("timed out" in lowered or "timeout" in lowered) else InferenceError
