"""The CPU forward gate: holders of one server's repository take turns; others do not wait.

Competition is made certain, not hoped for: a test lets the second holder in only after the kernel lists
it as waiting on the first one's lock (/proc/locks), and "at once" means both inside the gate at a
barrier. Each holder opens its own files, as each model instance (process) does, so the locks are the
same `flock`s whether the holders are threads or processes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bge_m3_triton.serving.forward_gate import ForwardGate

WAIT_S = 30  # a bound for a hung test, never reached when the gate works


def blocked_on_flock() -> int:
    """How many `flock` waiters of this process the kernel lists (`->` lines of /proc/locks)."""
    pid = str(os.getpid())
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if "->" in line and "FLOCK" in line and pid in line.split())


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_one_slot_runs_one_forward_at_a_time(tmp_path: Path) -> None:
    first, second = ForwardGate("/srv/repo", 1, tmp_path), ForwardGate("/srv/repo", 1, tmp_path)
    inside = threading.Event()
    waiting_before = blocked_on_flock()

    def enter() -> None:
        with second.hold():
            inside.set()

    with first.hold():
        contender = threading.Thread(target=enter)
        contender.start()
        wait_until(lambda: blocked_on_flock() > waiting_before, "the second holder never waited on the lock")
        assert not inside.is_set(), "the second holder got in while the first held the only slot"
    contender.join(WAIT_S)
    assert inside.is_set() and second.waited_s > 0
    first.close()
    second.close()


@pytest.mark.parametrize(("keys", "slots"), [(["/srv/repo", "/srv/repo"], 2), (["/srv/repo", "/srv/other"], 1)])
def test_free_slots_and_other_servers_let_holders_in_together(tmp_path: Path, keys: list[str], slots: int) -> None:
    """Two slots of one server, or one slot each of two servers: both holders are inside at the same time."""
    together = threading.Barrier(2, timeout=WAIT_S)
    failures: list[BaseException] = []

    def hold(key: str) -> None:
        gate = ForwardGate(key, slots, tmp_path)
        try:
            with gate.hold():
                together.wait()  # breaks (and raises) if the other cannot get in while this one holds
        except BaseException as exc:
            failures.append(exc)
        finally:
            gate.close()

    threads = [threading.Thread(target=hold, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S + 5)
    assert failures == []


def test_a_held_slot_is_released_by_an_error_and_repository_keys_match(tmp_path: Path) -> None:
    gate = ForwardGate("k", 1, tmp_path)
    with pytest.raises(RuntimeError), gate.hold():
        raise RuntimeError("forward failed")
    with gate.hold():  # would block forever if the slot had leaked
        pass
    gate.close()
    one = ForwardGate.for_repository("/srv/repo/bge_m3", 1)
    two = ForwardGate.for_repository("/srv/repo/bge_reranker/", 1)
    assert one.paths == two.paths
    one.close()
    two.close()
    with pytest.raises(ValueError, match="at least one slot"):
        ForwardGate("k", 0)
