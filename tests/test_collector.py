"""The collector: batches form when the forward gate frees, within the text cap; errors stay per request;
overload blocks `execute`; closing finishes queued work."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import fake_pb_utils as pb
import numpy as np
import pytest
from fake_pb_utils import Request, texts

from bge_m3_triton.core.batching import Interrupted
from bge_m3_triton.serving.collector import Collector
from bge_m3_triton.serving.instance import off_main_thread
from bge_m3_triton.serving.params import InvalidRequest
from bge_m3_triton.serving.triton_glue import BatchExecutor, Outputs, RequestView


class Fatal(BaseException):
    """What no `except Exception` catches (as KeyboardInterrupt or SystemExit)."""


class Stages:
    """Jobs are tuples of texts; the forward pass returns each job's text lengths."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, ...]]] = []
        self.started: list[float] = []  # time.monotonic() at each forward pass
        self.slow_started, self.slow_may_end = threading.Event(), threading.Event()
        self.interrupted = threading.Event()

    def parse(self, view: RequestView) -> tuple[str, ...]:
        return tuple(view.texts("TEXT"))

    def prepare(self, job: tuple[str, ...]) -> tuple[str, ...]:
        if "invalid" in job:
            raise InvalidRequest("an invalid text")
        return job

    def forward(self, prepared: Sequence[tuple[str, ...]]) -> list[list[int]]:
        self.batches.append(list(prepared))
        self.started.append(time.monotonic())
        if any("slow" in job for job in prepared):
            self.slow_started.set()
            while not self.slow_may_end.wait(0.01):  # a sub-batch boundary every 10 ms
                if self.interrupted.is_set():
                    raise Interrupted("stopped")
        if any("boom" in job for job in prepared):
            raise RuntimeError("boom in the forward pass")
        if any("fatal" in job for job in prepared):
            raise Fatal("not an Exception")
        return [[len(text) for text in job] for job in prepared]

    def pack(self, prepared: tuple[str, ...], result: list[int]) -> Outputs:
        if "unpackable" in prepared:
            raise ValueError("cannot pack")
        return {"OUT": np.array(result, dtype=np.float32).reshape(-1, 1)}

    def texts(self, prepared: tuple[str, ...]) -> int:
        return len(prepared)

    def interrupt(self) -> None:
        self.interrupted.set()


@pytest.fixture
def gate() -> threading.Lock:
    return threading.Lock()


def collector(gate: threading.Lock, stages: Stages, max_texts: int = 64, delay_s: float = 0.0,
              max_queue_size: int = 0, queue_timeout_s: float = 0.0, drain_s: float = 30.0) -> Collector:
    executor = BatchExecutor(pb.install(), "test", {"OUT": "FP32"}, max_text_bytes=1000)
    return Collector(executor, stages, lambda: gate, max_texts, delay_s, max_queue_size, queue_timeout_s, drain_s)


def request(*values: str, cancelled: bool = False, timeout_us: int = 0) -> Request:
    return Request({"TEXT": texts(*values)}, cancelled=cancelled, timeout_us=timeout_us)


def answer(req: Request) -> pb.InferenceResponse:
    assert req.sender.done.wait(30), "no response"
    return req.sender.sent[0]


def test_requests_queued_while_the_gate_is_held_form_one_batch(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages)
    with gate:
        first, second = request("a"), request("bb", "ccc")
        assert queue.execute([first]) is None
        queue.execute([second, request("invalid")])
        time.sleep(0.1)
        assert stages.batches == []
    assert answer(first).output_tensors["OUT"].tolist() == [[1]]
    assert answer(second).output_tensors["OUT"].tolist() == [[2], [3]]
    assert stages.batches == [[("a",), ("bb", "ccc")]]
    queue.close()


def test_a_batch_holds_at_most_max_texts_texts(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages, max_texts=3)
    requests = [request("a", "b"), request("c"), request("d"), request("e", "f", "g", "h")]
    with gate:
        queue.execute(requests)
    for req in requests:
        answer(req)
    # One job larger than the cap still goes, alone.
    assert [len(batch) for batch in stages.batches] == [2, 1, 1]
    queue.close()


def test_a_request_that_finds_the_model_idle_does_not_wait(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages, delay_s=60)
    started = time.monotonic()
    lone = request("alone")
    queue.execute([lone])
    assert answer(lone).output_tensors["OUT"].tolist() == [[5]]
    assert time.monotonic() - started < 20, "a lone request waited out the queue delay"
    queue.close()


def test_the_next_batch_waits_for_as_many_requests_as_the_last(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages, delay_s=60)
    first = [request("a"), request("b"), request("c")]
    with gate:
        queue.execute(first)
    for req in first:
        answer(req)
    # The three clients come back one by one, as closed-loop clients do: one batch of three, not 1 + 2.
    again = [request("d"), request("e"), request("f")]
    queue.execute(again[:1])
    time.sleep(0.3)
    assert len(stages.batches) == 1, "the forward thread did not wait for the previous batch's company"
    queue.execute(again[1:])
    for req in again:
        answer(req)
    assert stages.batches[1] == [("d",), ("e",), ("f",)]
    queue.close()


def test_requests_queued_during_a_batch_wait_for_that_batch_s_clients(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages, delay_s=60)
    slow, during = request("slow"), [request("b"), request("c")]
    queue.execute([slow])
    assert stages.slow_started.wait(30)
    queue.execute(during)
    stages.slow_may_end.set()
    answer(slow)
    # Three requests were in the model while "slow" ran: its client is awaited, so the two groups merge.
    time.sleep(0.3)
    assert len(stages.batches) == 1
    back = request("d")
    queue.execute([back])
    for req in [*during, back]:
        answer(req)
    assert stages.batches[1] == [("b",), ("c",), ("d",)]
    queue.close()


def test_the_wait_for_company_ends_after_the_delay(gate: threading.Lock) -> None:
    delay = 1.0
    stages = Stages()
    queue = collector(gate, stages, delay_s=delay)
    first = [request("a"), request("b")]
    with gate:
        queue.execute(first)
    for req in first:
        answer(req)
    arrived = time.monotonic()
    late = request("late")  # one of two: it waits for company, then goes alone
    queue.execute([late])
    assert not answer(late).has_error()
    assert [len(batch) for batch in stages.batches] == [2, 1]
    if arrived - stages.started[0] < delay:  # it came while the model was within its delay: it waited it out
        assert stages.started[1] >= stages.started[0] + delay, "the late request did not wait for company"
    queue.close()


def test_errors_stay_with_their_request(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages)
    requests = [request("fine"), request("invalid"), request("boom"), request("unpackable"),
                request("gone", cancelled=True), Request({"OTHER": texts("x")}), request("also fine")]
    with gate:
        queue.execute(requests)
    got = [answer(req) for req in requests]
    assert [r.has_error() for r in got] == [False, True, True, True, True, True, False]
    assert got[1].error().code() == "INVALID_ARG" and "invalid text" in got[1].error().message()
    assert got[2].error().message() == "inference failed: RuntimeError: boom in the forward pass"
    assert got[3].error().message() == "inference failed: ValueError: cannot pack"
    assert got[4].error().code() == "CANCELLED"
    assert "TEXT" in got[5].error().message()
    # The failed batch was retried job by job.
    assert stages.batches[0] == [("fine",), ("boom",), ("unpackable",), ("also fine",)]
    assert stages.batches[1:] == [[("fine",)], [("boom",)], [("unpackable",)], [("also fine",)]]
    queue.close()


def test_a_base_exception_answers_each_request_once_and_the_thread_goes_on(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages)
    requests = [request("fatal"), request("gone", cancelled=True)]
    with gate:
        queue.execute(requests)
    fatal, gone = (answer(req) for req in requests)
    assert fatal.error().code() == "INTERNAL" and "Fatal" in fatal.error().message()
    assert gone.error().code() == "CANCELLED"
    later = request("later")
    queue.execute([later])
    assert not answer(later).has_error()
    queue.close()
    assert [len(req.sender.sent) for req in requests] == [1, 1], "a request was answered twice"


def test_requests_beyond_the_queue_size_are_refused_at_once(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages, max_queue_size=2)
    with gate:
        first = [request("a"), request("b")]
        queue.execute(first)
        late = request("c")
        queue.execute([late])
        assert answer(late).error().code() == "UNAVAILABLE"
        assert "maximum queue size" in late.sender.sent[0].error().message()
        assert not first[0].sender.done.is_set()
    assert [answer(r).has_error() for r in first] == [False, False]
    again = request("d")
    queue.execute([again])
    assert not answer(again).has_error()
    queue.close()


def test_requests_that_waited_past_their_timeout_are_refused(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages, queue_timeout_s=0.2)
    patient = request("patient", timeout_us=60_000_000)  # its own timeout wins
    with gate:
        waited = request("waited")
        queue.execute([waited, patient])
        time.sleep(0.5)
    assert answer(waited).error().code() == "UNAVAILABLE"
    assert "timeout" in waited.sender.sent[0].error().message()
    assert not answer(patient).has_error()
    assert stages.batches == [[("patient",)]]
    queue.close()


def test_close_answers_what_is_queued(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages)
    requests = [request("a"), request("b")]
    with gate:
        queue.execute(requests)
        closing = threading.Thread(target=queue.close)
        closing.start()
    closing.join(30)
    assert not closing.is_alive()
    assert [answer(r).has_error() for r in requests] == [False, False]


def test_requests_after_close_are_refused_not_lost(gate: threading.Lock) -> None:
    queue = collector(gate, Stages())
    queue.close()
    late = request("late")
    queue.execute([late])
    assert answer(late).error().code() == "UNAVAILABLE"


def test_loading_runs_on_a_thread_that_then_exits() -> None:
    seen: list[threading.Thread] = []
    assert off_main_thread(lambda: seen.append(threading.current_thread()) or 42) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()
    with pytest.raises(ValueError, match="bad checkpoint"):
        off_main_thread(lambda: (_ for _ in ()).throw(ValueError("bad checkpoint")))


def test_the_drain_window_answers_every_request_then_stops_the_forward_pass(gate: threading.Lock) -> None:
    """Work longer than the window: the running batch and the queued requests are answered UNAVAILABLE when
    it ends, the forward pass is stopped between sub-batches, and each request gets exactly one response."""
    stages = Stages()
    queue = collector(gate, stages, drain_s=0.2)
    running, queued = request("slow"), [request("a"), request("b")]
    queue.execute([running])
    assert stages.slow_started.wait(30)
    queue.execute(queued)
    closing = threading.Thread(target=queue.close)
    closing.start()
    closing.join(30)
    assert not closing.is_alive() and stages.interrupted.is_set()
    for req in [running, *queued]:
        error = answer(req).error()
        assert error.code() == "UNAVAILABLE" and "drain window (0.2 s)" in error.message()
    assert stages.batches == [[("slow",)]], "a queued request was computed after the window"
    assert [len(req.sender.sent) for req in [running, *queued]] == [1, 1, 1]


def test_work_that_ends_within_the_drain_window_is_served(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages, drain_s=60)
    running, queued = request("slow"), request("queued")
    queue.execute([running])
    assert stages.slow_started.wait(30)
    queue.execute([queued])
    closing = threading.Thread(target=queue.close)
    closing.start()
    stages.slow_may_end.set()
    closing.join(30)
    assert not closing.is_alive() and not stages.interrupted.is_set()
    assert [answer(r).has_error() for r in (running, queued)] == [False, False]


def test_the_collector_exports_what_triton_cannot_see(gate: threading.Lock) -> None:
    stages = Stages()
    metrics = pb.MetricFamily.registry
    metrics.clear()
    queue = collector(gate, stages)
    with gate:
        queue.execute([request("a"), request("b", "c")])
        assert metrics[("bge_m3_requests_in_model", "test")].value == 2  # queued behind the held gate
        time.sleep(0.05)  # time queued: at least this
    queue.close()
    assert metrics[("bge_m3_requests_in_model", "test")].value == 0
    waited = metrics[("bge_m3_queue_seconds", "test")].observed
    total = metrics[("bge_m3_request_seconds", "test")].observed
    assert len(waited) == len(total) == 2 and min(waited) >= 0.05 and all(t >= w for t, w in zip(total, waited))
    assert metrics[("bge_m3_forward_texts_total", "test")].value == 3
