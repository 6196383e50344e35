"""A short run of the schema-generated requests (tests/gateway_fuzz.py) against the gateway in front of a
real Triton: what the in-memory models stand in for holds for the real ones."""

from __future__ import annotations

import pytest
import schemathesis
from conftest import GATEWAY_KEY, Gateway
from gateway_fuzz import call, draw_request, operations, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


@pytest.fixture(scope="module")
def schema(gateway: Gateway) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_url(gateway.url + "/openapi.json")
    loaded.config.update(base_url=gateway.url)
    return loaded


@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_requests_against_a_real_triton(schema: schemathesis.BaseSchema, data: st.DataObject) -> None:
    path, method = data.draw(st.sampled_from(operations(schema)), label="operation")
    case, raw = draw_request(schema, path, method, data)
    validate(case, call(case, raw, AUTH))
