"""An in-memory transport for testing code that uses the clients, without a server.

`FakeTransport(handler)` answers each call with `handler(call)`: a dict of output arrays, or a
`BGEM3Error` to return, or an exception to map as a transport error. It records every call and
counts sleeps through an injectable clock, so retries and backoff are visible to a test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bge_m3_client.errors import ModelNotReadyError
from bge_m3_client.transport import Call, Result, to_error

Handler = Callable[[Call], "dict[str, Any] | BaseException"]


class FakeTransport:
    """Implements `Transport` and `AsyncTransportLike` in memory."""

    def __init__(self, handler: Handler, configs: Mapping[str, dict[str, Any]] | None = None,
                 ready: Sequence[str] | None = None) -> None:
        self.handler = handler
        self.configs = dict(configs or {})
        self.ready = set(ready if ready is not None else self.configs)
        self.calls: list[Call] = []
        self.closed = False
        self._lock = threading.Lock()

    def _answer(self, call: Call) -> Result:
        with self._lock:
            self.calls.append(call)
        try:
            answer = self.handler(call)
        except BaseException as exc:  # a handler may raise what tritonclient would raise
            answer = exc
        if isinstance(answer, BaseException):
            return to_error(answer)
        return answer

    def model_config(self, model: str) -> dict[str, Any]:
        if model not in self.configs:
            raise ModelNotReadyError(f"Request for unknown model: '{model}' is not found")
        return self.configs[model]

    def is_model_ready(self, model: str) -> bool:
        return model in self.ready

    def infer_many(self, calls: Sequence[Call]) -> list[Result]:
        return [self._answer(call) for call in calls]

    async def infer(self, call: Call) -> Result:
        return self._answer(call)

    def close(self) -> None:
        self.closed = True


class AsyncFakeTransport(FakeTransport):
    """`FakeTransport` with the asyncio interface's coroutine methods."""

    async def model_config(self, model: str) -> dict[str, Any]:  # type: ignore[override]
        return FakeTransport.model_config(self, model)

    async def is_model_ready(self, model: str) -> bool:  # type: ignore[override]
        return FakeTransport.is_model_ready(self, model)

    async def close(self) -> None:  # type: ignore[override]
        self.closed = True


class StatusError(Exception):
    """What tritonclient raises: an exception with `status()` and `message()`."""

    def __init__(self, status: str | None, message: str) -> None:
        super().__init__(message)
        self._status, self._message = status, message

    def status(self) -> str | None:
        return self._status

    def message(self) -> str:
        return self._message


__all__ = ["AsyncFakeTransport", "FakeTransport", "StatusError"]
