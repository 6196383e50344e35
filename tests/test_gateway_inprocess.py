"""The gateway in-process over the in-memory models (tests/fake_triton.py): every error kind in every API
style, and the inputs that used to slip through (invalid Unicode, integers beyond 64 bits, missing bodies)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from fake_triton import CONFIGS, answer
from starlette.testclient import TestClient

from bge_m3_client import AsyncBGEM3Client
from bge_m3_client.testing import AsyncFakeTransport, StatusError
from bge_m3_client.transport import Call
from bge_m3_gateway.app import create_app
from bge_m3_gateway.backend import Backend
from bge_m3_gateway.settings import GatewaySettings

KEY = "in-process-key"


def app_over(handler: Any = answer, **settings: Any) -> TestClient:
    config = GatewaySettings(**settings)
    transport = AsyncFakeTransport(handler, CONFIGS)
    return TestClient(create_app(config, Backend(config, AsyncBGEM3Client(transport=transport, retries=0))))


CLIENT = app_over()


def send(client: TestClient, path: str, body: Any, **headers: str) -> httpx.Response:
    """POST `body` as Python's JSON writes it: a lone surrogate as `\\ud83d`, as a JavaScript client sends it."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json", **headers})

# What Triton (through tritonclient) raises, and the status each API answers it with. OpenAI and Cohere
# answer invalid input with 400, TEI and the FastAPI sketch with 422; the rest is the same everywhere.
TRITON_ERRORS = {
    "invalid": StatusError("400", "parameter 'mode' must be one of query, passage"),
    "rejected": StatusError("StatusCode.UNAVAILABLE", "Exceeds maximum queue size"),
    "unavailable": StatusError("StatusCode.UNAVAILABLE", "failed to connect to all addresses"),
    "not ready": StatusError("400", "Request for unknown model: 'bge_m3' is not found"),
    "timeout": StatusError("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded"),
    "internal": StatusError("500", "inference failed: RuntimeError: boom"),
}
STATUS = {  # style: kind -> status
    "openai": {"invalid": 400, "rejected": 429, "unavailable": 503, "not ready": 503, "timeout": 504, "internal": 500},
    "tei": {"invalid": 422, "rejected": 429, "unavailable": 503, "not ready": 503, "timeout": 504, "internal": 500},
    "cohere": {"invalid": 400, "rejected": 429, "unavailable": 503, "not ready": 503, "timeout": 504, "internal": 500},
    "sketch": {"invalid": 422, "rejected": 429, "unavailable": 503, "not ready": 503, "timeout": 504, "internal": 500},
}
ROUTES = {"openai": ("/v1/embeddings", {"input": "x"}), "tei": ("/embed", {"inputs": "x"}),
          "cohere": ("/v2/rerank", {"query": "q", "documents": ["d"]}),
          "sketch": ("/embeddings/", {"sentences": ["x"]})}


def message(style: str, body: Any) -> str:
    """The error message as each API family writes it; the shape is checked on the way."""
    if style == "openai":
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        return str(body["error"]["message"])
    if style == "tei":
        assert set(body) == {"error", "error_type"}
        return str(body["error"])
    if style == "cohere":
        assert set(body) == {"message"}
        return str(body["message"])
    assert "detail" in body
    return str(body["detail"])


@pytest.mark.parametrize("style", sorted(STATUS))
@pytest.mark.parametrize("kind", sorted(TRITON_ERRORS))
def test_every_error_kind_in_every_api_style(style: str, kind: str) -> None:
    def failing(call: Call) -> Any:
        return TRITON_ERRORS[kind]

    path, body = ROUTES[style]
    response = app_over(failing).post(path, json=body)
    assert response.status_code == STATUS[style][kind], response.text
    assert message(style, response.json())
    retry = response.headers.get("retry-after")
    assert (retry == "1") == (kind in ("rejected", "unavailable", "not ready")), (kind, retry)


@pytest.mark.parametrize(("path", "body", "style", "needle"), [
    ("/v1/embeddings", {"input": "\ud83d"}, "openai", "'input' is not valid Unicode: it holds a lone surrogate "
                                                      "(U+D83D) at character 0"),
    ("/v1/embeddings", {"input": ["fine", "emoji cut \ud83d"]}, "openai", "'input[1]' is not valid Unicode"),
    ("/", {"inputs": ["\udc00"]}, "tei", "'inputs[0]' is not valid Unicode"),
    ("/embed", {"inputs": "\ud83d"}, "tei", "'inputs' is not valid Unicode"),
    ("/embed_sparse", {"inputs": ["\ud83d"]}, "tei", "'inputs[0]' is not valid Unicode"),
    ("/tokenize", {"inputs": ["ok", "\ud83d"]}, "tei", "'inputs[1]' is not valid Unicode"),
    ("/rerank", {"query": "\ud83d", "texts": ["a"]}, "tei", "'query' is not valid Unicode"),
    ("/v2/rerank", {"query": "q", "documents": ["a", {"text": "\ud83d"}]}, "cohere", "'documents[1]' is not valid"),
    ("/v1/rerank", {"query": "\ud83d", "documents": ["a"]}, "openai", "'query' is not valid Unicode"),
    ("/v1/m3/embed", {"texts": ["\ud83d"]}, "openai", "'texts[0]' is not valid Unicode"),
    ("/v1/m3/score", {"query": "q", "passages": ["\ud83d"]}, "openai", "'passages[0]' is not valid Unicode"),
    ("/v1/m3/explain", {"query": "q", "passage": "x \ud83d"}, "openai", "'passage' is not valid Unicode"),
    ("/embeddings/", {"sentences": ["\ud83d"]}, "sketch", "'sentences[0]' is not valid Unicode"),
    ("/rerank/", {"sentence_pairs": [["q", "\ud83d"]]}, "sketch", "not valid Unicode"),
])
def test_invalid_unicode_is_the_apis_own_4xx_naming_the_item(path: str, body: dict, style: str, needle: str) -> None:
    response = send(CLIENT, path, body)
    assert response.status_code in (400, 422), response.text
    assert needle in message(style, response.json())


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v2/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": 2**63}, "max_tokens_per_doc"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": 2**64 + 1}, "max_tokens_per_doc"),
    ("/v1/m3/embed", {"texts": ["a"], "max_length": 2**63}, "max_length"),
    ("/v1/m3/embed", {"texts": ["a"], "max_length": -(2**63) - 1}, "max_length"),
    ("/v1/m3/score", {"query": "q", "passages": ["a"], "max_query_length": 2**70}, "max_query_length"),
    ("/v1/m3/explain", {"query": "q", "passage": "a", "max_passage_length": 0}, "max_passage_length"),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 2**64}, "top_n"),
])
def test_lengths_are_bounded_at_the_edge_never_retried_never_503(path: str, body: dict, field: str) -> None:
    response = send(CLIENT, path, body)
    assert response.status_code == 400 and "retry-after" not in response.headers, response.text
    assert f"'{field}'" in response.text


@pytest.mark.parametrize(("path", "style", "fields"), [
    ("/v1/embeddings", "openai", "'input'"), ("/embed", "tei", "'inputs'"), ("/", "tei", "'inputs'"),
    ("/v2/rerank", "cohere", "'query', 'documents'"), ("/v1/m3/score", "openai", "'query', 'passages'"),
    ("/embeddings/", "sketch", "'sentences'"), ("/rerank/", "sketch", "'sentence_pairs'"),
])
def test_a_missing_body_names_the_fields_to_send(path: str, style: str, fields: str) -> None:
    for content in (b"", b"[1, 2]", b'"text"'):
        response = CLIENT.post(path, content=content, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), response.text
        text = message(style, response.json())
        assert text.startswith("the request body ") and text.endswith(f"send a JSON object with {fields}"), text


def test_weights_whose_sum_overflows_are_served_or_refused_never_null() -> None:
    response = CLIENT.post("/v1/m3/score", json={"query": "q", "passages": ["a"], "weights": [1e308, 1e308, 1e308]})
    assert response.status_code == 200 and "null" not in response.text
    refused = CLIENT.post("/v1/m3/score", content=b'{"query": "q", "passages": ["a"], "weights": [1e999, 1, 1]}',
                          headers={"content-type": "application/json"})
    assert refused.status_code == 400 and "finite" in refused.json()["error"]["message"]


def test_tei_root_route_embeds_and_the_playground_stays_on_get() -> None:
    keyed = app_over(api_key=KEY)
    root = keyed.post("/", json={"inputs": ["a", "b c"]}, headers={"Authorization": f"Bearer {KEY}"})
    embed = keyed.post("/embed", json={"inputs": ["a", "b c"]}, headers={"Authorization": f"Bearer {KEY}"})
    assert root.status_code == 200 and root.json() == embed.json() and len(root.json()) == 2
    assert keyed.post("/", json={"inputs": "a"}).status_code == 401  # an API route: the key is needed
    page = keyed.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_tokenize_keeps_teis_meaning_of_text() -> None:
    tokens = CLIENT.post("/tokenize", json={"inputs": "an embedding"}).json()[0]
    words = [t for t in tokens if not t["special"]]
    assert [t["text"] for t in words] == ["an", "embedding"]
    assert all(t["text"] == "an embedding"[t["start"]:t["stop"]] for t in words)


def test_the_client_side_failure_of_a_real_tritonclient_is_not_unavailability() -> None:
    """tritonclient refuses to build a request with a parameter beyond 64 bits (a status-less ValueError)."""
    import numpy as np
    import tritonclient.grpc as grpc

    from bge_m3_client.transport import to_error

    text = grpc.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"x"]], dtype=object))
    client = grpc.InferenceServerClient("127.0.0.1:1")
    with pytest.raises(Exception) as raised:
        client.infer("bge_m3", [text], parameters={"max_length": 2**63})
    error = to_error(raised.value)
    assert type(error).__name__ == "InvalidInputError" and not error.retryable, error


def test_httpx_sees_the_same_app() -> None:  # the ASGI app works under another client too
    transport = httpx.ASGITransport(app=CLIENT.app)

    async def go() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return (await client.post("/v1/embeddings", json={"input": "x"})).status_code

    import asyncio

    assert asyncio.run(go()) == 200


def test_the_format_literal_is_the_clients() -> None:
    from typing import get_args

    from bge_m3_client import formats
    from bge_m3_gateway.schemas import Format

    assert get_args(Format) == formats.FORMATS


def test_native_embed_takes_formats_and_sends_the_scales() -> None:
    from bge_m3_client import formats

    plain = CLIENT.post("/v1/m3/embed", json={"texts": ["one two", "three"], "return_colbert": True}).json()["data"]
    for fmt in formats.FORMATS:
        body = {"texts": ["one two", "three"], "return_colbert": True, "dense_format": fmt, "colbert_format": fmt}
        data = CLIENT.post("/v1/m3/embed", json=body).json()["data"]
        for item, base in zip(data, plain):
            dense = np.array(item["dense"])
            expected, scale = formats.encode(np.array(base["dense"], dtype=np.float32)[None], fmt)
            np.testing.assert_allclose(dense, expected[0], atol=1e-3 if fmt == "float16" else 0)
            assert ("dense_scale" in item) == (scale is not None)
            assert ("colbert_scale" in item) == (fmt in formats.SCALED)
            if "colbert_scale" in item:
                assert len(item["colbert_scale"]) == len(item["colbert"])
    refused = CLIENT.post("/v1/m3/embed", json={"texts": ["x"], "dense_format": "int4"})
    assert refused.status_code == 400 and "dense_format" in refused.json()["error"]["message"]


def test_cohere_embed_answers_every_type_from_one_pass() -> None:
    from bge_m3_client import formats

    body = {"model": "embed-v4.0", "input_type": "search_document", "texts": ["one two", "three"],
            "embedding_types": ["float", "int8", "uint8", "binary", "ubinary", "base64"]}
    reply = CLIENT.post("/v2/embed", json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["texts"] == body["texts"] and answer["response_type"] == "embeddings_by_type"
    assert answer["meta"]["billed_units"]["input_tokens"] > 0
    floats = np.array(answer["embeddings"]["float"], dtype=np.float32)
    for kind, fmt in (("int8", "int8"), ("uint8", "uint8"), ("binary", "binary"), ("ubinary", "ubinary")):
        np.testing.assert_array_equal(np.array(answer["embeddings"][kind]), formats.encode(floats, fmt)[0])
    import base64

    decoded = np.frombuffer(base64.b64decode(answer["embeddings"]["base64"][0]), dtype="<f4")
    np.testing.assert_array_equal(decoded, floats[0])
    query = CLIENT.post("/v2/embed", json={**body, "input_type": "search_query", "embedding_types": ["float"]})
    assert set(query.json()["embeddings"]) == {"float"}


@pytest.mark.parametrize(("body", "needle"), [
    ({"input_type": "image", "texts": ["x"]}, "input_type"),
    ({"texts": ["x"], "inputs": [{"content": [{"type": "text", "text": "y"}]}]}, "either 'texts' or 'inputs'"),
    ({}, "either 'texts' or 'inputs'"),
    ({"texts": ["x"], "embedding_types": ["int4"]}, "embedding_types"),
    ({"texts": ["x"], "truncate": "START"}, "truncate"),
    ({"texts": ["\ud83d"]}, "'texts[0]' is not valid Unicode"),
])
def test_cohere_embed_refuses_in_cohere_words(body: dict, needle: str) -> None:
    reply = send(CLIENT, "/v2/embed", body)
    assert reply.status_code == 400 and set(reply.json()) == {"message"} and needle in reply.json()["message"], \
        reply.text
