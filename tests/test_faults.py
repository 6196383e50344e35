"""Faults against real servers: queue-policy rejections, cancellations, a dead stub, SIGTERM under load,
bad input at the tensor level, and model control that clients cannot use."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from conftest import REPO, Server, start_server, stub_pids
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


SLOW_MODEL_PY = '''
"""Test-only: the real bge_m3 adapter, every sub-batch of its forward pass slowed by 0.5 s."""
import importlib.util
import time

from bge_m3_triton.ops.launcher import REPO_ROOT

spec = importlib.util.spec_from_file_location("real_bge_m3", REPO_ROOT / "model_repository/bge_m3/1/model.py")
real = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real)


class TritonPythonModel(real.TritonPythonModel):
    def initialize(self, args):
        super().initialize(args)
        model = self.service.model
        run = model._run_sub_batch

        def slowed(*args, **kwargs):
            time.sleep(0.5)
            return run(*args, **kwargs)

        model._run_sub_batch = slowed
'''
DRAIN_S = 3


def in_model(server: Server) -> float:
    """The embed model's `bge_m3_requests_in_model` gauge: requests queued or computing."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("bge_m3_requests_in_model{") and 'model="bge_m3"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_drains_within_the_window_answers_everyone_and_exits_0(tmp_path: Path, m3_checkpoint: Path) -> None:
    """Work in flight longer than the drain window (each request 8 sub-batches of at least 0.5 s, the window
    3 s): on SIGTERM every request is answered, with its result or UNAVAILABLE, the forward pass stops,
    and the server exits 0 within the window and Triton's margin after it."""
    from bge_m3_triton.ops.launcher import SHUTDOWN_MARGIN_S

    source = tmp_path / "repository"
    shutil.copytree(REPO / "model_repository" / "bge_m3", source / "bge_m3")
    (source / "bge_m3" / "1" / "model.py").write_text(SLOW_MODEL_PY)
    running = start_server(tmp_path, ["--model", str(m3_checkpoint), "--dtype", "float32", "--max-batch-tokens",
                                      "256", "--model-repository", str(source), "--models", "bge_m3",
                                      "--drain-seconds", str(DRAIN_S), "--queue-delay-us", "0"], ["bge_m3"])

    def one(i: int) -> str:
        with BGEM3Client(running.grpc, protocol="grpc", retries=0) as client:
            try:
                return f"served {len(client.encode([LONG] * 8, is_passage=True))}"
            except RequestRejectedError as exc:
                assert "drain window" in str(exc) or "shutting down" in str(exc), exc
                return "unavailable"

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(one, i) for i in range(4)]
            while in_model(running) < 3:  # SIGTERM once three requests (12 s of work at least) are in the model
                assert not any(f.done() for f in futures), [f.result() for f in futures if f.done()]
                time.sleep(0.05)
            signalled = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            outcomes = [f.result(timeout=DRAIN_S + SHUTDOWN_MARGIN_S + 60) for f in futures]
        assert running.process.wait(DRAIN_S + SHUTDOWN_MARGIN_S + 60) == 0
        took = time.monotonic() - signalled
        assert set(outcomes) <= {"served 8", "unavailable"} and outcomes.count("unavailable") >= 2, outcomes
        assert took < DRAIN_S + SHUTDOWN_MARGIN_S, f"exit {took:.1f} s after SIGTERM"
        log = running.log.read_text()
        assert "drain window of 3 s over" in log and "Exit timeout expired" not in log and "Interrupted" not in log
        with BGEM3Client(running.http, retries=0, timeout=2) as client, pytest.raises(ServerUnavailableError):
            client.encode(["after shutdown"])
    finally:
        running.stop()
