"""Bad input and every error status of the gateway, produced for real: 401, 413, 422/400, 429, 503, 504."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import GATEWAY_KEY, Gateway, Server, free_ports, start_server
from injected import HELD, in_model, repository

pytestmark = pytest.mark.server

HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}
LONG = " ".join(f"token{i} more words to make this passage long" for i in range(300))


def post(gateway: Gateway, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(gateway.url + path, headers={**HEADERS, **kwargs.pop("headers", {})},  # type: ignore[dict-item]
                      timeout=60, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "body", "status", "needle"), [
    ("/v1/embeddings", {"input": []}, 400, "'input' must not be empty"),
    ("/v1/embeddings", {"input": ["ok", ""]}, 400, "'input[1]' is an empty string"),
    ("/v1/embeddings", {"input": 42}, 400, "input"),
    ("/v1/embeddings", {"input": ["a", 3]}, 400, "'input[1]' must be a string"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ("/v1/embeddings", {"model": "bge-m3"}, 400, "'input' is required"),
    ("/v1/embeddings", {"input": ["x"] * 65}, 400, "at most 64"),
    ("/embed", {"inputs": []}, 422, "'inputs' must not be empty"),
    ("/embed", {"inputs": "x", "normalize": False}, 422, "L2-normalized"),
    ("/embed", {"inputs": "x", "truncation_direction": "Left"}, 422, "truncation_direction"),
    ("/rerank", {"query": "q", "texts": "not a list"}, 422, "texts"),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 400, "'top_n': Input should be greater than"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": -2}, 400, "'top_n': Input should be greater"),
    ("/v1/m3/embed", {"texts": ["x"], "mode": "document"}, 400, "mode"),
    ("/v1/m3/embed", {"texts": ["x"], "max_length": 100000}, 400, "max_length"),
    ("/v1/m3/score", {"query": "q", "passages": ["a"], "weights": [0.1, 0.2]}, 400, "weights"),
    ("/v1/m3/score", {"query": "q", "passages": ["a"], "weights": [0, 0, 1]}, 400, "dense_weight + sparse_weight"),
    ("/rerank/", {"sentence_pairs": [["only one"]]}, 422, "[query, passage]"),
])
def test_bad_bodies_get_a_clear_error_in_the_api_style(gateway: Gateway, path: str, body: dict, status: int,
                                                       needle: str) -> None:
    response = post(gateway, path, json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    message = {"/v2/rerank": lambda p: p["message"], "/embed": lambda p: p["error"], "/rerank": lambda p: p["error"],
               "/rerank/": lambda p: p["detail"]}.get(path, lambda p: p["error"]["message"])(payload)
    assert needle in message
    assert "Traceback" not in response.text and "/site-packages/" not in response.text


def test_malformed_json_non_utf8_and_nan(gateway: Gateway) -> None:
    for content in (b"{bad json", b'{"inputs": "\xff\xfe"}'):
        response = post(gateway, "/embed", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422 and response.json()["error_type"] == "Validation"
    nan = post(gateway, "/v1/m3/score", content=b'{"query": "q", "passages": ["a"], "weights": [NaN, 0.2, 0.4]}',
               headers={"content-type": "application/json"})
    assert nan.status_code == 400 and "finite" in nan.json()["error"]["message"]


def test_unknown_fields_are_ignored_and_empty_strings_served_natively(gateway: Gateway) -> None:
    response = post(gateway, "/v1/embeddings", json={"input": "x", "user": "u1", "something_else": {"a": 1}})
    assert response.status_code == 200
    native = post(gateway, "/v1/m3/embed", json={"texts": ["", "   "]}).json()["data"]
    assert [d["tokens"] for d in native] == [2, 2]


def test_body_over_the_limit_is_413(gateway: Gateway) -> None:
    big = {"inputs": ["x" * 1_000_000, "y" * 1_100_000]}
    response = post(gateway, "/embed", json=big)
    assert response.status_code == 413 and "over the gateway's limit" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds on the streamed body too
        yield b'{"inputs": ["'
        for _ in range(30):
            yield b"z" * 100_000
        yield b'"]}'

    streamed = post(gateway, "/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]["type"] == "invalid_request_error"


def test_api_key_is_required_and_checked(gateway: Gateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = httpx.post(gateway.url + "/embed", json={"inputs": "x"}, headers=headers)
        assert response.status_code == 401 and response.json()["error_type"] == "Unauthorized"
    assert httpx.post(gateway.url + "/embed", json={"inputs": "x"}, headers={"X-Api-Key": GATEWAY_KEY}).status_code \
        == 200
    assert httpx.get(gateway.url + "/health").status_code == 200


def test_unknown_route_is_404_in_style(gateway: Gateway) -> None:
    response = post(gateway, "/v1/completions", json={})
    assert response.status_code == 404 and "no route" in response.json()["error"]["message"]


def test_triton_down_is_503_with_retry_after(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    down = Gateway(f"127.0.0.1:{port}", tmp_path / "gateway.log")
    try:
        response = httpx.post(down.url + "/v1/embeddings", json={"input": "x"}, timeout=30)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["type"] == "service_unavailable"
        assert httpx.get(down.url + "/health", timeout=30).status_code == 503
    finally:
        down.stop()


def test_deadline_is_504_with_the_sketch_body(server: Server, tmp_path: Path) -> None:
    hurried = Gateway(server.grpc, tmp_path / "gateway.log", "--request-timeout", "0.01")
    try:
        response = httpx.post(hurried.url + "/embeddings/", json={"sentences": [LONG] * 32}, timeout=60)
        assert response.status_code == 504
        body = response.json()
        assert set(body) == {"detail", "processing_time"} and body["processing_time"] >= 0.01
        tei = httpx.post(hurried.url + "/embed", json={"inputs": [LONG] * 32}, timeout=60)
        assert tei.status_code == 504 and tei.json()["error_type"] == "Timeout"
    finally:
        hurried.stop()


def test_overload_is_429_through_serve_gateway_port(tmp_path: Path, m3_checkpoint: Path) -> None:
    """One command serves Triton and the gateway; with the model held on purpose (tests/injected.py) and its
    one queue slot taken, further requests are answered 429 at once, the held ones 200 once it goes on, and
    stopping the command stops both."""
    gateway_port = free_ports(1)[0]
    server = start_server(tmp_path, ["--model", str(m3_checkpoint), "--dtype", "float32", "--max-queue-size", "1",
                                     "--queue-delay-us", "0", "--models", "bge_m3", "--gateway-port",
                                     str(gateway_port), "--workdir", str(tmp_path / "work"), "--model-repository",
                                     str(repository(tmp_path, HELD))], ["bge_m3"])
    hold = tmp_path / "work" / "models" / "bge_m3" / "hold"
    url = f"http://127.0.0.1:{gateway_port}"
    body = {"texts": ["a passage"] * 8, "mode": "passage", "return_colbert": True}

    async def until_in_model(count: int) -> None:
        for _ in range(6000):
            if in_model(server) >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} requests never reached the model")

    try:
        async def load() -> tuple[list[int], list[int]]:
            async with httpx.AsyncClient(timeout=120) as client:
                for _ in range(600):  # the gateway starts beside Triton: wait until it answers
                    try:
                        if (await client.get(url + "/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
                hold.touch()
                admitted = [asyncio.create_task(client.post(url + "/v1/m3/embed", json=body))]
                await until_in_model(1)
                admitted.append(asyncio.create_task(client.post(url + "/v1/m3/embed", json=body)))
                await until_in_model(2)
                refused = await asyncio.gather(*(client.post(url + "/v1/m3/embed", json=body) for _ in range(5)))
                assert not any(task.done() for task in admitted)
                hold.unlink()
                return [r.status_code for r in await asyncio.gather(*admitted)], [r.status_code for r in refused]

        admitted, refused = asyncio.run(load())
        assert admitted == [200, 200] and refused == [429] * 5
    finally:
        assert server.stop() == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=5)
