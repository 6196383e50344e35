"""Faults against real servers: queue-policy rejections, cancellations, a dead stub, SIGTERM under load,
bad input at the tensor level, and model control that clients cannot use."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from conftest import Server, start_server, stub_pids
from tritonclient.utils import InferenceServerException

from bge_m3_client import (
    BGEM3Client,
    BGEM3Error,
    InferenceError,
    InvalidInputError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerUnavailableError,
)

LONG = " ".join(f"token{i} more words to make this passage long" for i in range(300))


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory, m3_checkpoint: Path) -> Iterator[Server]:
    """A server with a tiny queue and a short queue timeout, so overload is rejected quickly."""
    tmp = tmp_path_factory.mktemp("strict")
    running = start_server(tmp, ["--model", str(m3_checkpoint), "--dtype", "float32", "--max-queue-size", "2",
                                 "--queue-timeout-us", "200000", "--max-batch-tokens", "512",
                                 "--queue-delay-us", "0", "--workdir", str(tmp / "work")], ["bge_m3"])
    yield running
    running.stop()


def test_overload_is_rejected_quickly_and_the_rest_is_served(strict_server: Server) -> None:
    def one(i: int) -> tuple[str, float]:
        start = time.monotonic()
        with BGEM3Client(strict_server.http, retries=0) as client:
            try:
                result = client.encode([LONG] * 8, is_passage=True, return_colbert=True)
                assert len(result) == 8 and result[0].tokens > 512
                return "ok", time.monotonic() - start
            except RequestRejectedError:
                return "rejected", time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        outcomes = list(pool.map(one, range(24)))
    kinds = [kind for kind, _ in outcomes]
    assert "ok" in kinds and "rejected" in kinds
    assert max(seconds for kind, seconds in outcomes if kind == "rejected") < 10


def test_retries_absorb_rejections(strict_server: Server) -> None:
    def one(i: int) -> int:
        with BGEM3Client(strict_server.grpc, protocol="grpc", retries=8, backoff=0.05) as client:
            return len(client.encode([LONG] * 4, is_passage=True))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [4] * 8


def test_client_timeout_then_the_server_still_answers(strict_server: Server) -> None:
    with BGEM3Client(strict_server.grpc, protocol="grpc", timeout=0.001, retries=0) as client, \
            pytest.raises(RequestTimeoutError):
        client.encode([LONG] * 16, is_passage=True, return_colbert=True)
    with BGEM3Client(strict_server.grpc, protocol="grpc") as client:
        assert client.encode(["still here"])[0].tokens > 0


def test_tensor_level_bad_input(strict_server: Server) -> None:
    raw = http.InferenceServerClient(strict_server.http)
    wrong_type = http.InferInput("TEXT", [1, 1], "INT32")
    wrong_type.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    with pytest.raises(InferenceServerException, match="(?i)data.?type"):
        raw.infer("bge_m3", [wrong_type])
    with pytest.raises(InferenceServerException, match="(?i)expected 1 inputs but got 0"):
        raw.infer("bge_m3", [])
    with BGEM3Client(strict_server.http) as client:
        assert client.encode(["x" * 1_000_000])[0].truncated
        with pytest.raises(InvalidInputError, match="limit is 2000000"):
            client.encode(["x" * 3_000_000])
        assert [r.tokens for r in client.encode(["", "   ", "\n"])] == [2, 2, 2]


def test_clients_cannot_load_or_unload_models(strict_server: Server) -> None:
    raw = grpc.InferenceServerClient(strict_server.grpc)
    with pytest.raises(InferenceServerException, match="(?i)not allowed|explicit"):
        raw.unload_model("bge_m3")
    with pytest.raises(InferenceServerException, match="(?i)not allowed|explicit"):
        raw.load_model("bge_m3")
    assert raw.is_model_ready("bge_m3")


def test_a_dead_stub_is_reported_not_silent(strict_server: Server) -> None:
    """Last in this module: it breaks the server. Triton 2.51 does not restart a stub and keeps
    answering ready; with the stub dead, our client gets an error and `bge-m3-triton
    health` says unhealthy."""
    from bge_m3_triton.ops.cli import main

    stubs = stub_pids(strict_server, "bge_m3")
    assert len(stubs) == 1  # the default: one instance
    for pid in stubs:
        os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    with BGEM3Client(strict_server.http, retries=0) as client, pytest.raises(BGEM3Error) as failure:
        client.encode(["anyone there?"])
    assert isinstance(failure.value, (InferenceError, ServerUnavailableError))
    assert main(["health", "--url", strict_server.http, "--timeout", "5"]) == 1


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, m3_checkpoint: Path) -> None:
    running = start_server(tmp_path, ["--model", str(m3_checkpoint), "--dtype", "float32",
                                      "--max-batch-tokens", "256"], ["bge_m3"])

    def one(i: int) -> int:
        with BGEM3Client(running.grpc, protocol="grpc", retries=0) as client:
            return len(client.encode([LONG] * 32, is_passage=True, return_colbert=True))

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(one, i) for i in range(4)]
            time.sleep(0.3)
            running.process.send_signal(signal.SIGTERM)
            assert [f.result(timeout=60) for f in futures] == [32] * 4
        assert running.process.wait(60) == 0
        with BGEM3Client(running.http, retries=0, timeout=2) as client, pytest.raises(ServerUnavailableError):
            client.encode(["after shutdown"])
    finally:
        running.stop()
