"""The launcher's watchdog (ops/watchdog.py): a model that stops answering stops the server, a busy one
does not, and one that has not answered yet (loading) is not counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from bge_m3_client import InferenceError, RequestRejectedError, RequestTimeoutError
from bge_m3_triton.ops import watchdog as wd


def run(outcomes: list[Exception | None], misses: int = 3, ready_after: int = 0) -> tuple[list[str], int]:
    """Run a watchdog over scripted probe outcomes (fast: a 1 ms interval), Triton saying the model is ready
    after `ready_after` asks; what it said, and probes used."""
    script: Iterator[Exception | None] = iter(outcomes)
    asked = [0]

    def ready() -> bool:
        asked[0] += 1
        return asked[0] > ready_after

    used = [0]
    finished = threading.Event()
    said: list[str] = []

    def check() -> Exception | None:
        used[0] += 1
        try:
            return next(script)
        except StopIteration:
            finished.set()
            return None

    dog = wd.Watchdog(check, ready, 0.001, lambda reason: (said.append(reason), finished.set()), misses).start()
    assert finished.wait(30)
    dog.stop()
    return said, used[0]


def test_three_misses_in_a_row_once_ready_stop_the_server() -> None:
    """A stub that dies before any probe answered still counts: readiness arms the watchdog, not an answer."""
    dead = InferenceError("Stub process 'bge_m3_0_0' is not healthy.")
    said, used = run([dead, dead, dead, None], ready_after=5)
    assert len(said) == 1 and "stopped answering" in said[0] and "not healthy" in said[0] and used == 3


def test_misses_broken_by_an_answer_do_not() -> None:
    dead = InferenceError("a passing failure")
    said, _ = run([dead, dead, None, dead, dead, None, dead, dead])
    assert said == []


def test_nothing_is_probed_before_the_model_is_ready() -> None:
    said, used = run([], ready_after=20)
    assert said == [] and used == 1  # the script's end (one probe) only once ready


class FakeClient:
    """Stands in for `BGEM3Client` in `probe`: every encode raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __call__(self, *args: object, **kwargs: object) -> FakeClient:
        return self

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def encode(self, *args: object, **kwargs: object) -> None:
        raise self.error


def test_busy_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that waits past its timeout or meets a full queue answers None: the server is busy, not dead."""
    for busy in (RequestTimeoutError("no answer in time"), RequestRejectedError("Exceeds maximum queue size")):
        monkeypatch.setattr(wd, "BGEM3Client", FakeClient(busy))
        assert wd.probe("127.0.0.1:1", 1.0) is None
    monkeypatch.setattr(wd, "BGEM3Client", FakeClient(InferenceError("Stub process is not healthy")))
    assert isinstance(wd.probe("127.0.0.1:1", 1.0), InferenceError)
