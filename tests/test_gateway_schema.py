"""The gateway against its own OpenAPI schema, in-process over the in-memory models (tests/fake_triton.py):
generated requests for every operation (tests/gateway_fuzz.py), and what the schema says of them."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from fake_triton import async_transport
from gateway_fuzz import call, draw_request, operations, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bge_m3_client import AsyncBGEM3Client
from bge_m3_gateway.app import create_app
from bge_m3_gateway.backend import Backend
from bge_m3_gateway.settings import GatewaySettings

SETTINGS = GatewaySettings(max_inputs=64, max_body_bytes=200_000)
APP = create_app(SETTINGS, Backend(SETTINGS, AsyncBGEM3Client(transport=async_transport(), retries=0)))
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.mark.parametrize(("path", "method"), operations(SCHEMA))
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_operation_answers_any_input_as_its_schema_says(path: str, method: str, data: st.DataObject) -> None:
    case, raw = draw_request(SCHEMA, path, method, data)
    validate(case, call(case, raw))


def test_the_schema_covers_every_route() -> None:
    described = set(operations(SCHEMA))
    assert ("/", "POST") in described and ("/v1/embeddings", "POST") in described and len(described) == 19
    raw: dict[str, Any] = APP.openapi()
    for path, method in described:
        answers = raw["paths"][path][method.lower()]["responses"]
        ok = answers["200"]["content"]
        assert ok != {"application/json": {"schema": {"type": "string"}}}, path
        assert "HTTPValidationError" not in str(answers)
