"""The CPU forward gate: processes sharing one server's repository take turns; others do not wait."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from pathlib import Path

import pytest

from bge_m3_triton.serving.forward_gate import ForwardGate


def _hold(key: str, folder: str, slots: int, seconds: float, spans: dict[int, tuple[float, float]], index: int) -> None:
    gate = ForwardGate(key, slots, Path(folder))
    with gate.hold():
        started = time.monotonic()
        time.sleep(seconds)
        spans[index] = (started, time.monotonic())


def _spans(tmp_path: Path, keys: list[str], slots: int) -> list[tuple[float, float]]:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        spans = manager.dict()
        workers = [context.Process(target=_hold, args=(key, str(tmp_path), slots, 0.4, spans, index))
                   for index, key in enumerate(keys)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
            assert worker.exitcode == 0
        return sorted(spans.values())


def _overlaps(spans: list[tuple[float, float]]) -> int:
    return sum(1 for (_, end), (start, _) in itertools.pairwise(spans) if start < end)


def test_one_slot_runs_one_forward_at_a_time(tmp_path: Path) -> None:
    assert _overlaps(_spans(tmp_path, ["/srv/repo"] * 3, slots=1)) == 0


def test_two_slots_let_two_run_together(tmp_path: Path) -> None:
    spans = _spans(tmp_path, ["/srv/repo"] * 2, slots=2)
    assert _overlaps(spans) == 1


def test_another_server_has_its_own_gate(tmp_path: Path) -> None:
    assert _overlaps(_spans(tmp_path, ["/srv/repo", "/srv/other"], slots=1)) == 1


def test_a_held_slot_is_released_by_an_error_and_repository_keys_match(tmp_path: Path) -> None:
    gate = ForwardGate("k", 1, tmp_path)
    with pytest.raises(RuntimeError), gate.hold():
        raise RuntimeError("forward failed")
    with gate.hold():  # would block forever if the slot had leaked
        pass
    one = ForwardGate.for_repository("/srv/repo/bge_m3", 1)
    two = ForwardGate.for_repository("/srv/repo/bge_reranker/", 1)
    assert one.paths == two.paths
    one.close()
    two.close()
    with pytest.raises(ValueError, match="at least one slot"):
        ForwardGate("k", 0)
