"""What every route module uses: the JSON response, input checks, the backend and metrics of the app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse

from bge_m3_client import EmbeddingResult, InvalidInputError
from bge_m3_client.packing import utf8
from bge_m3_gateway.backend import Backend
from bge_m3_gateway.errors import ApiError
from bge_m3_gateway.metrics import GatewayMetrics
from bge_m3_gateway.settings import GatewaySettings


class JSON(JSONResponse):
    """orjson-encoded JSON; numpy arrays are written directly (no Python float lists in between)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def backend(request: Request) -> Backend:
    """The app's Triton backend."""
    return request.app.state.backend  # type: ignore[no-any-return]


def metrics(request: Request) -> GatewayMetrics:
    """The app's metrics."""
    return request.app.state.metrics  # type: ignore[no-any-return]


def settings(request: Request) -> GatewaySettings:
    """The app's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


def served(request: Request, route: str, texts: int, tokens: int = 0) -> None:
    """Count what a request served."""
    metrics(request).served(route, texts, tokens)


def text_list(value: Any, field: str, max_inputs: int, allow_empty: bool = True) -> list[str]:
    """One string or a non-empty list of strings, at most `max_inputs`; an `ApiError` naming what is wrong."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise ApiError("invalid", f"'{field}' must be a string or a list of strings", field)
    if not texts:
        raise ApiError("invalid", f"'{field}' must not be empty", field)
    if len(texts) > max_inputs:
        raise ApiError("invalid", f"'{field}' has {len(texts):,} items; this gateway takes at most {max_inputs:,} "
                                  "per request (--max-inputs)", field)
    for index, text in enumerate(texts):
        where = f"'{field}[{index}]'" if isinstance(value, list) else f"'{field}'"
        if not isinstance(text, str):
            raise ApiError("invalid", f"{where} must be a string, got {type(text).__name__}", field)
        if not allow_empty and not text:
            raise ApiError("invalid", f"{where} is an empty string", field)
        try:
            utf8(text, where)
        except InvalidInputError as exc:
            raise ApiError("invalid", str(exc), field) from None
    return list(texts)


def check_dimensions(dimensions: int | None, results: Sequence[EmbeddingResult]) -> None:
    """Refuse a `dimensions` other than the served vectors' width (BGE-M3 is not Matryoshka-trained)."""
    width = next((r.dense.shape[0] for r in results if r.dense is not None), None)
    if dimensions is not None and dimensions != width:
        raise ApiError("invalid", f"'dimensions' must be {width} or absent: BGE-M3 was not trained to shorten its "
                                  f"vectors (Matryoshka), so cutting them to {dimensions} would lose quality "
                                  "silently", "dimensions")


def top_indices(scores: Sequence[float], top_n: int | None) -> list[int]:
    """Positions sorted by score, best first, cut to `top_n` (which must be positive; past the end is all)."""
    if top_n is not None and top_n < 1:
        raise ApiError("invalid", f"'top_n' must be 1 or more, got {top_n}", "top_n")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order[:top_n] if top_n is not None else order
