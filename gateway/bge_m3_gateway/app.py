"""The gateway application: routes of every API family over one Triton backend, guarded by middleware."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from bge_m3_gateway.backend import Backend
from bge_m3_gateway.errors import ApiError, error_body, style_for
from bge_m3_gateway.metrics import GatewayMetrics
from bge_m3_gateway.middleware import TOO_LARGE, GuardMiddleware
from bge_m3_gateway.routes import cohere, native, openai, rerank, sketch, tei
from bge_m3_gateway.routes.common import JSON, backend
from bge_m3_gateway.schemas import UNICODE_ERROR, Health
from bge_m3_gateway.settings import GatewaySettings

STATIC = Path(__file__).resolve().parent / "static"
DESCRIPTION = """BGE-M3 on Triton over plain HTTP: OpenAI embeddings, TEI, Cohere/Jina rerank, the seed
sketch's routes and BGE-M3's native dense + sparse + ColBERT API. Errors are JSON in the style of each API."""


def create_app(settings: GatewaySettings, backend_override: Backend | None = None) -> FastAPI:
    """The ASGI app for `settings` (the backend connects to Triton lazily, on the first request)."""
    metrics = GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backend_override is None:
            app.state.backend = Backend(settings)
        try:
            yield
        finally:
            await app.state.backend.close()

    app = FastAPI(title="bge-m3-gateway", description=DESCRIPTION, version="0.1.0", lifespan=lifespan,
                  default_response_class=JSON, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    if backend_override is not None:  # usable without the lifespan too (ASGI test clients that skip it)
        app.state.backend = backend_override
    app.state.started = time.time()
    for module in (openai, cohere, rerank, tei, native, sketch):
        app.include_router(module.router)
    _add_operations(app, metrics)
    _add_playground(app)
    _add_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"])
    app.add_middleware(GuardMiddleware, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes,
                       timeout_s=settings.request_timeout, metrics=metrics)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without the `422 HTTPValidationError` it adds to every route with a body: this app
    answers invalid bodies in each API's own shape (`schemas.responses` declares them), never in that one."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                answers = operation.get("responses", {})
                if "HTTPValidationError" in str(answers.get("422", {})):
                    del answers["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _add_operations(app: FastAPI, metrics: GatewayMetrics) -> None:
    @app.get("/health", tags=["Operations"], summary="200 only when Triton's embed model answers a real request",
             responses={200: {"model": Health, "description": "the embed model answered"},
                        503: {"model": Health, "description": "the embed model did not answer"}})
    async def health(request: Request) -> JSON:
        if await backend(request).healthy():
            return JSON({"status": "ok"})
        return JSON({"status": "unhealthy", "error": "Triton's embed model did not answer"}, status_code=503)

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics", response_class=PlainTextResponse,
             responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                              "description": "Prometheus' text format"}})
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
        return answer(request, ApiError("invalid", validation_message(exc.errors(), _required_fields(request))))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSON:
        if TOO_LARGE in request.scope:
            return answer(request, request.scope[TOO_LARGE])
        kind = "not_found" if exc.status_code in (404, 405) else "invalid"
        message = f"no route {request.method} {request.url.path}" if kind == "not_found" else str(exc.detail)
        if message == "There was an error parsing the body":  # FastAPI's words for a body it could not decode
            message = "the body is not valid JSON (UTF-8)"
        status, body = error_body(style_for(request.url.path), ApiError(kind, message))
        return JSON(body, status_code=exc.status_code if kind == "not_found" else status)


def validation_message(errors: Any, required: Sequence[str] = ()) -> str:
    """A short message from pydantic's errors: what is wrong, and where in the body (`input[1]`); a missing
    or non-object body names the fields the route needs (`required`)."""
    by_field: dict[str, list[dict[str, Any]]] = {}
    for error in errors:  # a field of several types (a string or a list) fails once per type: one entry
        by_field.setdefault(_location(error.get("loc", ())), []).append(error)
    parts = []
    for where, failed in list(by_field.items())[:3]:
        kind = failed[0].get("type")
        if kind == "json_invalid":
            parts.append("the body is not valid JSON")
        elif not where:
            fields = ", ".join(f"'{name}'" for name in required)
            problem = "is missing" if kind == "missing" else "must be a JSON object"
            parts.append(f"the request body {problem}: send a JSON object" + (f" with {fields}" if fields else ""))
        elif kind == "missing":
            parts.append(f"'{where}' is required")
        elif kind == UNICODE_ERROR:
            parts.append(f"'{where}' {failed[0].get('msg')}")
        else:
            messages = [str(e.get("msg", "invalid")) for e in failed]
            parts.append(f"'{where}': " + " or ".join([messages[0]] + [m[0].lower() + m[1:] for m in messages[1:]]))
    return "; ".join(parts) or "the request body is invalid"


def _location(loc: Sequence[Any]) -> str:
    """pydantic's error location as the field a user wrote: `input[1]`, `weights[0]`. Past the field's name
    a string in the location names a type of a union (`str`, `list[any]`), not a field: dropped."""
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif not where and part != "body":
            where = str(part)
    return where


def _required_fields(request: Request) -> list[str]:
    """The required fields of the body the matched route reads."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", {})
    return [name for name, info in fields.items() if info.is_required()]
