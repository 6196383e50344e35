"""ASGI middleware: API key, body size limit, deadline (504) and metrics, each answering in the route's style."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import orjson

from bge_m3_gateway.errors import ApiError, error_body, style_for
from bge_m3_gateway.metrics import GatewayMetrics

Scope = dict[str, Any]
TOO_LARGE = "bge_m3_gateway.body_too_large"
OPEN_PATHS = frozenset({"/", "/health", "/metrics", "/docs", "/openapi.json", "/favicon.ico"})


async def send_error(send: Any, path: str, error: ApiError, extra: dict[str, Any] | None = None) -> None:
    """Answer with `error` in the style of `path`'s API."""
    status, body = error_body(style_for(path), error, extra)
    headers = [(b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    if error.kind == "auth":
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


class BodyTooLarge(Exception):
    """The request body passed the limit while it was being read."""


class GuardMiddleware:
    """Checks the API key and the body size, enforces the deadline and records metrics for each request."""

    def __init__(self, app: Any, api_key: str, max_body_bytes: int, timeout_s: float,
                 metrics: GatewayMetrics) -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        started = time.perf_counter()
        state = {"status": 0}

        async def tracked_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
            await send(message)

        try:
            await self._guarded(scope, receive, tracked_send, path, started)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # the route's template, never the raw path
            self.metrics.observe(route, state["status"] or 500, time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Any, send: Any, path: str, started: float) -> None:
        state = {"started": False}

        async def guarded_send(message: dict[str, Any]) -> None:
            state["started"] = True
            await send(message)

        if self.api_key and not _open(scope) and not self._authorized(scope):
            await send_error(send, path, ApiError("auth", "a valid API key is required: "
                                                          "send 'Authorization: Bearer <key>'"))
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await send_error(send, path, self._too_large(declared))
            return
        try:
            await asyncio.wait_for(self.app(scope, self._limited(scope, receive), guarded_send), self.timeout_s)
        except BodyTooLarge:
            if not state["started"]:
                await send_error(send, path, self._too_large(None))
        except asyncio.TimeoutError:
            if not state["started"]:
                elapsed = round(time.perf_counter() - started, 3)
                await send_error(send, path, ApiError("timeout", f"the request took longer than {self.timeout_s:g} s"),
                                 {"processing_time": elapsed} if style_for(path) == "sketch" else None)

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            token = headers.get(b"x-api-key", b"")
        return hmac.compare_digest(token.strip(), self.api_key)

    def _too_large(self, size: int | None) -> ApiError:
        got = f" ({size:,} bytes)" if size is not None else ""
        return ApiError("too_large", f"the request body{got} is over the gateway's limit of "
                                     f"{self.max_body_bytes:,} bytes")

    def _limited(self, scope: Scope, receive: Any) -> Any:
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    scope[TOO_LARGE] = self._too_large(None)  # FastAPI turns body errors into 400s: say why
                    raise BodyTooLarge()
            return message

        return limited


def _open(scope: Scope) -> bool:
    """Whether a request needs no API key: reading the page, docs, health and metrics (`POST /` is TEI's
    embed route and needs one), the static files, and CORS preflights."""
    method, path = scope.get("method"), scope["path"]
    if method == "OPTIONS" or path.startswith("/static/"):
        return True
    return path in OPEN_PATHS and method in ("GET", "HEAD")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
