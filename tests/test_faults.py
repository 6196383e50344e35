"""Faults against real servers: queue-policy rejections, client timeouts, a dead stub, SIGTERM under load,
bad input at the tensor level, and model control that clients cannot use.

The model's forward pass is held on purpose (tests/injected.py: `HELD` waits while a file exists) or
slowed on purpose (`SLOW`), and the tests wait on the server's own gauge of requests in the model, so
what they assert does not depend on how fast or busy the machine is.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from conftest import Server, start_server, stub_pids
from injected import HELD, SLOW, in_model, metric, repository
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

pytestmark = pytest.mark.server

LONG = " ".join(f"token{i} more words to make this passage long" for i in range(300))
WAIT_S = 120  # a bound for a hung test, never reached when the server works


class Held:
    """A server whose `bge_m3` forward passes wait while `hold` exists: at most 2 requests queued."""

    def __init__(self, server: Server, hold: Path) -> None:
        self.server, self.hold = server, hold

    def until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    def until_in_model(self, count: int) -> None:
        self.until(lambda: in_model(self.server) >= count, f"{count} requests never reached the model")


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory, m3_checkpoint: Path) -> Iterator[Held]:
    tmp = tmp_path_factory.mktemp("held")
    running = start_server(tmp, ["--model", str(m3_checkpoint), "--dtype", "float32", "--max-queue-size", "2",
                                 "--queue-delay-us", "0", "--models", "bge_m3", "--workdir", str(tmp / "work"),
                                 "--model-repository", str(repository(tmp, HELD))], ["bge_m3"])
    yield Held(running, tmp / "work" / "models" / "bge_m3" / "hold")
    running.stop()


def test_overload_is_refused_at_once_and_the_rest_is_served(held: Held) -> None:
    """One request computing and two queued fill the model: six more are refused while it is still held."""
    def one(i: int) -> str:
        with BGEM3Client(held.server.http, retries=0) as client:
            try:
                assert len(client.encode([f"text {i}"] * 4, is_passage=True)) == 4
                return "ok"
            except RequestRejectedError as exc:
                assert "maximum queue size" in str(exc)
                return "refused"

    held.hold.touch()
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        first = [pool.submit(one, 0)]
        held.until_in_model(1)
        first += [pool.submit(one, i) for i in (1, 2)]
        held.until_in_model(3)
        rest = [pool.submit(one, i) for i in range(3, 9)]
        assert [f.result(timeout=WAIT_S) for f in rest] == ["refused"] * 6  # answered while the model is held
        assert not any(f.done() for f in first)
        held.hold.unlink()
        assert [f.result(timeout=WAIT_S) for f in first] == ["ok"] * 3


def test_retries_absorb_rejections(held: Held) -> None:
    refused_before = metric(held.server, "bge_m3_request_errors_total", 'model="bge_m3",code="unavailable"')

    def one(i: int) -> int:
        with BGEM3Client(held.server.grpc, protocol="grpc", retries=10, backoff=0.05) as client:
            return len(client.encode([LONG] * 4, is_passage=True))

    held.hold.touch()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(8)]
        held.until(lambda: metric(held.server, "bge_m3_request_errors_total", 'model="bge_m3",code="unavailable"')
                   >= refused_before + 5, "the full queue refused no request")
        held.hold.unlink()
        assert [f.result(timeout=WAIT_S) for f in futures] == [4] * 8


def test_requests_that_arrive_during_a_forward_pass_share_the_next(held: Held) -> None:
    idle = lambda: in_model(held.server) == 0  # noqa: E731 (the counters are whole once the gauge reads 0)
    held.until(idle, "earlier requests never left the model")
    before = held.server.forward_totals("bge_m3")
    held.hold.touch()
    with concurrent.futures.ThreadPoolExecutor(3) as pool, BGEM3Client(held.server.grpc, protocol="grpc") as client:
        first = pool.submit(client.encode, ["first"])
        held.until_in_model(1)
        later = [pool.submit(client.encode, [f"later {i}"]) for i in range(2)]
        held.until_in_model(3)
        held.hold.unlink()
        assert [len(f.result(timeout=WAIT_S)) for f in (first, *later)] == [1, 1, 1]
    held.until(idle, "the requests never left the model")
    after = held.server.forward_totals("bge_m3")
    assert after["forward_requests"] - before.get("forward_requests", 0) == 3
    assert after["forward_passes"] - before.get("forward_passes", 0) == 2  # "first" alone, then the two together


def test_client_timeout_then_the_server_still_answers(held: Held) -> None:
    held.hold.touch()
    try:
        with BGEM3Client(held.server.grpc, protocol="grpc", timeout=0.5, retries=0) as client, \
                pytest.raises(RequestTimeoutError):
            client.encode(["held past the client's timeout"])
    finally:
        held.hold.unlink()
    with BGEM3Client(held.server.grpc, protocol="grpc") as client:
        assert client.encode(["still here"])[0].tokens > 0


def test_tensor_level_bad_input(held: Held) -> None:
    raw = http.InferenceServerClient(held.server.http)
    wrong_type = http.InferInput("TEXT", [1, 1], "INT32")
    wrong_type.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    with pytest.raises(InferenceServerException, match="(?i)data.?type"):
        raw.infer("bge_m3", [wrong_type])
    with pytest.raises(InferenceServerException, match="(?i)expected 1 inputs but got 0"):
        raw.infer("bge_m3", [])
    with BGEM3Client(held.server.http) as client:
        assert client.encode(["x" * 1_000_000])[0].truncated
        with pytest.raises(InvalidInputError, match="limit is 2000000"):
            client.encode(["x" * 3_000_000])
        assert [r.tokens for r in client.encode(["", "   ", "\n"])] == [2, 2, 2]


def test_clients_cannot_load_or_unload_models(held: Held) -> None:
    raw = grpc.InferenceServerClient(held.server.grpc)
    with pytest.raises(InferenceServerException, match="(?i)not allowed|explicit"):
        raw.unload_model("bge_m3")
    with pytest.raises(InferenceServerException, match="(?i)not allowed|explicit"):
        raw.load_model("bge_m3")
    assert raw.is_model_ready("bge_m3")


def test_a_dead_stub_is_reported_not_silent(tmp_path: Path, m3_checkpoint: Path) -> None:
    """Triton 2.51 does not restart a stub and keeps answering ready; with the stub dead, our client gets
    an error, `bge-m3-triton health` says unhealthy and the launcher exits 3 (its own server: it breaks it)."""
    from bge_m3_triton.ops.cli import main

    running = start_server(tmp_path, ["--model", str(m3_checkpoint), "--dtype", "float32", "--models", "bge_m3",
                                      "--watchdog-seconds", "1"], ["bge_m3"])
    try:
        stubs = stub_pids(running, "bge_m3")
        assert len(stubs) == 1  # the default: one instance
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT_S
        while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in stubs):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with BGEM3Client(running.http, retries=0) as client, pytest.raises(BGEM3Error) as failure:
            client.encode(["anyone there?"])
        assert isinstance(failure.value, (InferenceError, ServerUnavailableError))
        assert main(["health", "--url", running.http, "--timeout", "5"]) == 1
        # the launcher's watchdog sees it too and exits non-zero, so a restart policy brings a fresh server
        assert running.process.wait(WAIT_S) == 3
        assert "the embed model stopped answering" in running.log.read_text()
    finally:
        running.stop()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


DRAIN_S = 3


def test_sigterm_drains_within_the_window_answers_everyone_and_exits_0(tmp_path: Path, m3_checkpoint: Path) -> None:
    """Work in flight longer than the drain window (each request 8 sub-batches of at least 0.5 s, the window
    3 s): on SIGTERM every request is answered, with its result or UNAVAILABLE, the forward pass stops,
    and the server exits 0 within the window and Triton's margin after it."""
    from bge_m3_triton.ops.launcher import SHUTDOWN_MARGIN_S

    running = start_server(tmp_path, ["--model", str(m3_checkpoint), "--dtype", "float32", "--max-batch-tokens",
                                      "256", "--model-repository", str(repository(tmp_path, SLOW)), "--models",
                                      "bge_m3", "--drain-seconds", str(DRAIN_S), "--queue-delay-us", "0"], ["bge_m3"])

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
            deadline = time.monotonic() + WAIT_S
            while in_model(running) < 3:  # SIGTERM once three requests (12 s of work at least) are in the model
                assert not any(f.done() for f in futures), [f.result() for f in futures if f.done()]
                assert time.monotonic() < deadline
                time.sleep(0.02)
            signalled = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            outcomes = [f.result(timeout=WAIT_S) for f in futures]
        assert running.process.wait(WAIT_S) == 0
        took = time.monotonic() - signalled
        assert set(outcomes) <= {"served 8", "unavailable"} and outcomes.count("unavailable") >= 2, outcomes
        assert took < DRAIN_S + SHUTDOWN_MARGIN_S, f"exit {took:.1f} s after SIGTERM"
        log = running.log.read_text()
        assert "drain window of 3 s over" in log and "Exit timeout expired" not in log and "Interrupted" not in log
        with BGEM3Client(running.http, retries=0, timeout=2) as client, pytest.raises(ServerUnavailableError):
            client.encode(["after shutdown"])
    finally:
        running.stop()


def test_the_autoscalers_signal_rises_with_the_load_and_triton_s_own_does_not(held: Held) -> None:
    """The metric the Prometheus adapter serves the HPA (deploy/k8s) is 0 idle and counts every request in
    the model under load; Triton's own queue time stays near zero meanwhile, as its clock stops when
    `execute` returns (docs/decisions/010-autoscaling-signal.md)."""
    import yaml
    from conftest import REPO

    rules = yaml.safe_load(yaml.safe_load((REPO / "deploy" / "k8s" / "prometheus-adapter-rules.yaml").read_text())
                           ["data"]["config.yaml"])["rules"]
    series = rules[0]["seriesQuery"].split("{")[0]
    held.until(lambda: metric(held.server, series) == 0, "the model never went idle")
    triton_queue = ("nv_inference_queue_duration_us", 'model="bge_m3"')
    triton_count = ("nv_inference_request_success", 'model="bge_m3"')
    before = [metric(held.server, *m) for m in (triton_queue, triton_count, ("bge_m3_queue_seconds_sum",),
                                                 ("bge_m3_queue_seconds_count",))]
    held.hold.touch()
    readings = [metric(held.server, series)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool, BGEM3Client(held.server.grpc, protocol="grpc") as client:
        futures = []
        for load in (1, 2, 3):  # one computing (held), then one and two queued behind it
            futures.append(pool.submit(client.encode, [f"load {load}"]))
            held.until_in_model(load)
            readings.append(metric(held.server, series))
        time.sleep(0.5)  # the requests wait at least this long in the model: a lower bound, not a hope
        held.hold.unlink()
        assert all(len(f.result(timeout=WAIT_S)) == 1 for f in futures)
    held.until(lambda: metric(held.server, series) == 0, "the requests never left the model")
    assert readings == [0, 1, 2, 3]
    queue_us, count, ours_s, ours_n = (metric(held.server, *m) - b for m, b in zip(
        (triton_queue, triton_count, ("bge_m3_queue_seconds_sum",), ("bge_m3_queue_seconds_count",)), before))
    assert count == 3 and ours_n == 3
    assert ours_s / ours_n >= 0.5 / 3  # two of three waited out the hold at least
    assert queue_us / count < 0.1 * (ours_s / ours_n) * 1e6  # Triton saw a tenth of it at most
