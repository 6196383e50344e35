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

from bge_m3_triton.serving.collector import Collector, load_off_main_thread
from bge_m3_triton.serving.params import InvalidRequest
from bge_m3_triton.serving.triton_glue import BatchExecutor, Outputs, RequestView


class Stages:
    """Jobs are tuples of texts; the forward pass returns each job's text lengths."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, ...]]] = []

    def parse(self, view: RequestView) -> tuple[str, ...]:
        return tuple(view.texts("TEXT"))

    def prepare(self, job: tuple[str, ...]) -> tuple[str, ...]:
        if "invalid" in job:
            raise InvalidRequest("an invalid text")
        return job

    def forward(self, prepared: Sequence[tuple[str, ...]]) -> list[list[int]]:
        self.batches.append(list(prepared))
        if any("boom" in job for job in prepared):
            raise RuntimeError("boom in the forward pass")
        return [[len(text) for text in job] for job in prepared]

    def pack(self, prepared: tuple[str, ...], result: list[int]) -> Outputs:
        if "unpackable" in prepared:
            raise ValueError("cannot pack")
        return {"OUT": np.array(result, dtype=np.float32).reshape(-1, 1)}

    def texts(self, prepared: tuple[str, ...]) -> int:
        return len(prepared)


@pytest.fixture
def gate() -> threading.Lock:
    return threading.Lock()


def collector(gate: threading.Lock, stages: Stages, max_texts: int = 64, max_pending_texts: int = 256) -> Collector:
    executor = BatchExecutor(pb.install(), "test", {"OUT": "FP32"}, max_text_bytes=1000)
    return Collector(executor, stages, lambda: gate, max_texts, max_pending_texts)


def request(*values: str, cancelled: bool = False) -> Request:
    return Request({"TEXT": texts(*values)}, cancelled=cancelled)


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


def test_execute_blocks_while_too_much_is_queued(gate: threading.Lock) -> None:
    stages = Stages()
    queue = collector(gate, stages, max_texts=1, max_pending_texts=2)
    returned = threading.Event()
    with gate:
        queue.execute([request("a"), request("b")])
        third = request("c")
        threading.Thread(target=lambda: (queue.execute([third]), returned.set()), daemon=True).start()
        assert not returned.wait(0.3), "execute returned although two texts were already waiting"
    assert returned.wait(30)
    assert answer(third).output_tensors["OUT"].tolist() == [[1]]
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
    assert load_off_main_thread(lambda: seen.append(threading.current_thread()) or 42) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()
    with pytest.raises(ValueError, match="bad checkpoint"):
        load_off_main_thread(lambda: (_ for _ in ()).throw(ValueError("bad checkpoint")))
