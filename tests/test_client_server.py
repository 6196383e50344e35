"""The client against a real server: protocols, sync/async, threads, the sketches' shapes, error types."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from conftest import Server, free_ports
from reference import TEXTS

from bge_m3_client import (
    AsyncBGEM3Client,
    BGEM3Client,
    InvalidInputError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from bge_m3_client import contract as c
from bge_m3_client.adapters import handle_fastapi_embeddings, handle_fastapi_rerank, handle_runpod

pytestmark = pytest.mark.server


def test_http_grpc_sync_async_identical(server: Server) -> None:
    kwargs = {"is_passage": True, "return_colbert": True, "batch_size": 3}
    with BGEM3Client(server.http) as http_client, BGEM3Client(server.grpc, protocol="grpc") as grpc_client:
        results = [http_client.encode(TEXTS, **kwargs), grpc_client.encode(TEXTS, **kwargs)]

    async def run(protocol: str) -> list:
        async with AsyncBGEM3Client(server.url(protocol), protocol=protocol) as client:
            return await client.encode(TEXTS, **kwargs)

    results += [asyncio.run(run("http")), asyncio.run(run("grpc"))]
    first = results[0]
    # Equal up to float rounding: a text's sub-batch (and so its padding and GEMM shapes) depends on
    # which requests Triton happened to batch with it.
    for other in results[1:]:
        for a, b in zip(first, other):
            np.testing.assert_allclose(a.dense, b.dense, atol=1e-6)
            np.testing.assert_allclose(a.colbert, b.colbert, atol=1e-6)
            assert a.sparse["indices"] == b.sparse["indices"]
            np.testing.assert_allclose(a.sparse["values"], b.sparse["values"], atol=1e-6)
            assert (a.tokens, a.truncated) == (b.tokens, b.truncated)


def test_sparse_is_qdrant_ready(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        for result in client.encode(TEXTS):
            indices, values = result.sparse["indices"], result.sparse["values"]
            assert all(isinstance(i, int) for i in indices) and all(isinstance(v, float) for v in values)
            assert indices == sorted(set(indices)) and len(indices) == len(values)
            assert all(v > 0 for v in values)


def _mixed_call(client: BGEM3Client, job: int) -> Any:
    text = TEXTS[job % len(TEXTS)]
    if job % 3 == 0:
        return client.encode([text, TEXTS[(job + 1) % len(TEXTS)]], is_passage=job % 2 == 0, return_colbert=True)
    if job % 3 == 1:
        return client.score(text, TEXTS[:4])
    return client.rerank(text, TEXTS[:5], top_n=3)


def _assert_same(one: Any, other: Any) -> None:
    if isinstance(one, list) and one and hasattr(one[0], "dense"):
        for a, b in zip(one, other, strict=True):
            np.testing.assert_allclose(a.dense, b.dense, atol=1e-6)
            np.testing.assert_allclose(a.colbert, b.colbert, atol=1e-6)
            assert a.sparse["indices"] == b.sparse["indices"]
    elif isinstance(one, list) and one and isinstance(one[0], dict):
        for a, b in zip(one, other, strict=True):
            assert a == pytest.approx(b, abs=1e-6)
    else:
        assert [i for i, _ in one] == [i for i, _ in other]
        assert [s for _, s in one] == pytest.approx([s for _, s in other], abs=1e-6)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_one_client_shared_by_16_threads(server: Server, protocol: str) -> None:
    """A blocking client is shareable: 16 threads of mixed encode/score/rerank equal one-at-a-time calls."""
    jobs = list(range(48))
    with BGEM3Client(server.url(protocol), protocol=protocol) as client:
        expected = [_mixed_call(client, job) for job in jobs]
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda job: _mixed_call(client, job), jobs))
    for one, other in zip(expected, got, strict=True):
        _assert_same(one, other)


def test_runpod_shape(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        out = handle_runpod(client, {"input": {"texts": ["a query", "another"], "isPassage": False,
                                               "batchSize": 1}})
        assert set(out) == {"results"} and [r["text"] for r in out["results"]] == ["a query", "another"]
        first = out["results"][0]
        assert set(first) == {"text", "dense", "sparse", "colbert"}
        assert isinstance(first["dense"], list) and isinstance(first["colbert"][0], list)
        assert set(first["sparse"]) == {"indices", "values"}
        expected = {"error": "'texts' must be a list of strings"}
        assert handle_runpod(client, {"input": {"texts": "not a list"}}) == expected
        assert "batchSize" in handle_runpod(client, {"input": {"texts": ["x"], "batchSize": -1}})["error"]
        assert handle_runpod(client, {"input": {"texts": []}}) == {"results": []}
        direct = handle_runpod(client, {"texts": ["direct input"]})  # the input itself, without {"input": ...}
        assert [r["text"] for r in direct["results"]] == ["direct input"]
        np.testing.assert_allclose(direct["results"][0]["dense"], client.encode(["direct input"])[0].dense,
                                   atol=1e-6)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_stopped_server_is_unavailable(protocol: str) -> None:
    port = free_ports(1)[0]
    with BGEM3Client(f"127.0.0.1:{port}", protocol=protocol, retries=1, backoff=0.01, timeout=5) as client, \
            pytest.raises(ServerUnavailableError):
        client.encode(["x"])


def test_missing_model_is_not_ready(server: Server) -> None:
    with BGEM3Client(server.http, model="no_such_model") as client, pytest.raises(ModelNotReadyError):
        client.encode(["x"])


def test_health_command(server: Server) -> None:
    from bge_m3_triton.ops.cli import main

    assert main(["health", "--url", server.http]) == 0
    assert main(["health", "--url", f"127.0.0.1:{free_ports(1)[0]}", "--timeout", "2"]) == 1


def test_runpod_worker_handler(server: Server) -> None:
    from bge_m3_client.runpod_worker import make_handler

    handler, modifier = make_handler({"TRITON_URL": server.grpc, "TRITON_PROTOCOL": "grpc", "MAX_CONCURRENCY": "3"})
    out = asyncio.run(handler({"id": "job-1", "input": {"texts": ["x", "y"], "isPassage": True}}))
    assert "error" not in out, out
    assert modifier.maximum == 3 and [r["text"] for r in out["results"]] == ["x", "y"]


def test_fastapi_sketch_shapes(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        out = handle_fastapi_embeddings(client, {"sentences": ["first", "second"]})
        assert set(out) == {"embeddings"} and len(out["embeddings"]) == 2 and len(out["embeddings"][0]) == 32
        expected = client.encode(["first"], is_passage=True, return_sparse=False)[0].dense
        np.testing.assert_allclose(out["embeddings"][0], expected, atol=1e-6)
        pairs = [["what is bge", "bge is a model"], ["what is bge", "cats"]]
        scores = handle_fastapi_rerank(client, {"sentence_pairs": pairs})["scores"]
        want = client.score_pairs([tuple(p) for p in pairs], max_query_length=256, max_passage_length=5000)
        assert scores == pytest.approx([w[c.COMBINED_SCORE] for w in want], abs=1e-6)
        with pytest.raises(InvalidInputError):
            handle_fastapi_rerank(client, {"sentence_pairs": [["only one"]]})
