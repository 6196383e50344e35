"""Property-based requests for the gateway, generated from its own `/openapi.json` (schemathesis).

Each example is a request schemathesis draws for one operation, valid or invalid by the schema, and
often with one field replaced by an edge value (invalid Unicode, integers beyond 64 bits, negative and
zero lengths, NaN, infinities and huge floats, empty values, wrong types) or with no body at all.
Whatever comes in, the answer is no 5xx, its status is one the schema documents, and its body matches
the schema for that status: the route's response or its API family's error shape.
"""

from __future__ import annotations

import json
import math
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

UNICODE_EDGES = ["\ud83d", "cut emoji \ud83d", "\udfff tail", "\x00", "", " "]
NUMBER_EDGES: list[Any] = [2**63, 2**64 + 1, -(2**63) - 1, 10**30, -1, 0, 1, 2, 8193, math.nan, math.inf, -math.inf,
                           1e308, -1e308, 5e-324, 0.5]
SHAPE_EDGES: list[Any] = [None, True, [], {}, [""], ["\ud83d"], [2**64], [math.nan, 1, 1], [1e308, 1e308, 1e308],
                          {"text": "\ud83d"}, "a" * 5000]
EDGE_VALUES = st.one_of(st.sampled_from(UNICODE_EDGES), st.sampled_from(NUMBER_EDGES), st.sampled_from(SHAPE_EDGES))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NO_BODY = object()


def operations(schema: Any) -> list[tuple[str, str]]:
    """(path, method) of every operation the schema describes."""
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        found.append((operation.path, operation.method.upper()))
    return sorted(found)


def edge_body(body: Any, data: st.DataObject, properties: list[str]) -> Any:
    """`body` with one field (or one item of a list field) replaced by an edge value, or no body at all."""
    if data.draw(st.integers(0, 9), label="drop the body?") == 0:
        return NO_BODY
    if not isinstance(body, dict):
        return data.draw(EDGE_VALUES, label="body")
    body = dict(body)
    key = data.draw(st.sampled_from(sorted(set(properties) | set(body)) or ["input"]), label="field")
    value = data.draw(EDGE_VALUES, label="value")
    current = body.get(key)
    if isinstance(current, list) and current and data.draw(st.booleans(), label="an item?"):
        current = list(current)
        current[data.draw(st.integers(0, len(current) - 1), label="index")] = value
        body[key] = current
    else:
        body[key] = value
    return body


def draw_request(schema: Any, path: str, method: str, data: st.DataObject) -> tuple[Any, bytes | None]:
    """A generated case for the operation (schema-valid or schema-invalid) and, when an edge value went
    into its body, the body as sent (Python's JSON, which writes NaN and Infinity as JavaScript does)."""
    operation = schema[path][method]
    edge = method == "POST" and data.draw(st.integers(0, 3), label="edge value?") > 0
    mode = GenerationMode.POSITIVE if edge else data.draw(st.sampled_from(list(GenerationMode)), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    if not edge:
        return case, None
    body_schema = operation.definition.raw.get("requestBody", {}).get("content", {}).get("application/json", {})
    reference = body_schema.get("schema", {}).get("$ref", "")
    component = schema.raw_schema["components"]["schemas"].get(reference.rsplit("/", 1)[-1], {})
    body = edge_body(case.body if isinstance(case.body, dict) else {}, data, list(component.get("properties", {})))
    case.body = schemathesis.core.NOT_SET
    case.media_type = None
    return case, b"" if body is NO_BODY else json.dumps(body).encode()


def call(case: Any, raw: bytes | None, headers: dict[str, str] | None = None) -> Any:
    """Send the case (with its raw body, when it has one)."""
    if raw is None:
        return case.call(headers=headers)
    return case.call(headers={**(headers or {}), "content-type": "application/json"}, data=raw)


def validate(case: Any, response: Any) -> None:
    """The checks that hold for every request, valid or not."""
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500, (response.status_code, response.text)
