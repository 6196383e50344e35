"""The client against a real server: protocols, sync/async, the RunPod shape, error types."""

from __future__ import annotations

import asyncio

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


def test_runpod_shape(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        out = client.handle_runpod({"input": {"texts": ["a query", "another"], "isPassage": False, "batchSize": 1}})
        assert set(out) == {"results"} and [r["text"] for r in out["results"]] == ["a query", "another"]
        first = out["results"][0]
        assert set(first) == {"text", "dense", "sparse", "colbert"}
        assert isinstance(first["dense"], list) and isinstance(first["colbert"][0], list)
        assert set(first["sparse"]) == {"indices", "values"}
        expected = {"error": "'texts' must be a list of strings"}
        assert client.handle_runpod({"input": {"texts": "not a list"}}) == expected
        assert "batchSize" in client.handle_runpod({"input": {"texts": ["x"], "batchSize": -1}})["error"]
        assert client.handle_runpod({"input": {"texts": []}}) == {"results": []}
        assert "max_length" not in client.handle_runpod({"texts": ["direct input"]})


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
    from bge_m3_triton.cli import main

    assert main(["health", "--url", server.http]) == 0
    assert main(["health", "--url", f"127.0.0.1:{free_ports(1)[0]}", "--timeout", "2"]) == 1


def test_runpod_worker_handler(server: Server) -> None:
    from bge_m3_client.runpod_worker import make_handler

    handler, concurrency = make_handler({"TRITON_URL": server.grpc, "TRITON_PROTOCOL": "grpc", "MAX_CONCURRENCY": "3"})
    out = asyncio.run(handler({"id": "job-1", "input": {"texts": ["x", "y"], "isPassage": True}}))
    assert "error" not in out, out
    assert concurrency == 3 and [r["text"] for r in out["results"]] == ["x", "y"]


def test_fastapi_sketch_shapes(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        out = client.handle_fastapi_embeddings({"sentences": ["first", "second"]})
        assert set(out) == {"embeddings"} and len(out["embeddings"]) == 2 and len(out["embeddings"][0]) == 32
        expected = client.encode(["first"], return_sparse=False)[0].dense
        np.testing.assert_allclose(out["embeddings"][0], expected, atol=1e-6)
        pairs = [["what is bge", "bge is a model"], ["what is bge", "cats"]]
        scores = client.handle_fastapi_rerank({"sentence_pairs": pairs})["scores"]
        want = client.score_pairs([tuple(p) for p in pairs], max_query_length=256, max_passage_length=5000)
        assert scores == pytest.approx([w["colbert+sparse+dense"] for w in want], abs=1e-6)
        with pytest.raises(InvalidInputError):
            client.handle_fastapi_rerank({"sentence_pairs": [["only one"]]})
