"""The gateway application: routes of every API family over one Triton backend, guarded by middleware."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from bge_m3_gateway.backend import Backend
from bge_m3_gateway.errors import ApiError, error_body, style_for
from bge_m3_gateway.metrics import GatewayMetrics
from bge_m3_gateway.middleware import TOO_LARGE, GuardMiddleware
from bge_m3_gateway.routes import native, openai, rerank, sketch, tei
from bge_m3_gateway.routes.common import JSON, backend
from bge_m3_gateway.settings import GatewaySettings

STATIC = Path(__file__).resolve().parent / "static"
DESCRIPTION = """BGE-M3 on Triton over plain HTTP: OpenAI embeddings, TEI, Cohere/Jina rerank, the seed
sketch's routes and BGE-M3's native dense + sparse + ColBERT API. Errors are JSON in the style of each API."""


def create_app(settings: GatewaySettings, backend_override: Backend | None = None) -> FastAPI:
    """The ASGI app for `settings` (the backend connects to Triton lazily, on the first request)."""
    metrics = GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backend = backend_override or Backend(settings)
        try:
            yield
        finally:
            await app.state.backend.close()

    app = FastAPI(title="bge-m3-gateway", description=DESCRIPTION, version="0.1.0", lifespan=lifespan,
                  default_response_class=JSON, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.started = time.time()
    for module in (openai, rerank, tei, native, sketch):
        app.include_router(module.router)
    _add_operations(app, metrics)
    _add_playground(app)
    _add_error_handlers(app)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"])
    app.add_middleware(GuardMiddleware, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes,
                       timeout_s=settings.request_timeout, metrics=metrics)
    return app


def _add_operations(app: FastAPI, metrics: GatewayMetrics) -> None:
    @app.get("/health", tags=["Operations"], summary="200 only when Triton's embed model answers a real request")
    async def health(request: Request) -> JSON:
        if await backend(request).healthy():
            return JSON({"status": "ok"})
        return JSON({"status": "unhealthy", "error": "Triton's embed model did not answer"}, status_code=503)

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_playground(app: FastAPI) -> None:
    """The playground page at `/`: static files shipped in the package, no build step, no CDN."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def _add_error_handlers(app: FastAPI) -> None:
    def answer(request: Request, error: ApiError) -> JSON:
        status, body = error_body(style_for(request.url.path), error)
        return JSON(body, status_code=status, headers=error.headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSON:
        return answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSON:
        return answer(request, ApiError("invalid", validation_message(exc.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSON:
        if TOO_LARGE in request.scope:
            return answer(request, request.scope[TOO_LARGE])
        kind = "not_found" if exc.status_code in (404, 405) else "invalid"
        message = f"no route {request.method} {request.url.path}" if kind == "not_found" else str(exc.detail)
        status, body = error_body(style_for(request.url.path), ApiError(kind, message))
        return JSON(body, status_code=exc.status_code if kind == "not_found" else status)


def validation_message(errors: Any) -> str:
    """A short message from pydantic's errors: what is wrong, and where in the body."""
    parts = []
    for error in list(errors)[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if error.get("type") == "json_invalid":
            parts.append("the body is not valid JSON")
        elif error.get("type") == "missing":
            parts.append(f"'{where}' is required")
        else:
            parts.append(f"'{where}': {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "the request body is invalid"
