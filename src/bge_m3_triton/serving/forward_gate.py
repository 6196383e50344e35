"""At most N forward passes at once on a CPU host, across the model instances (processes) of one server.

Why: every weight-holding model (embed, cross-encoder), and every extra instance of one, runs its own
forward thread (serving.collector). Two of them computing at once oversubscribe a small CPU, each
with threads meant for all the cores. The gate lets every instance take requests, tokenize and answer
on its own while only `slots` of them run a forward pass, each with the cores meant for one.

The gate is a set of `flock` files keyed by the served repository, so every model of one server on
this host (embed and cross-encoder alike) shares it, and a second server does not. A process that
dies releases its lock with its file descriptors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class ForwardGate:
    """A cross-process counting lock: `with gate.hold():` waits for one of `slots` slots."""

    def __init__(self, key: str, slots: int, folder: Path | None = None) -> None:
        if slots < 1:
            raise ValueError(f"a forward gate needs at least one slot, got {slots}")
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) if folder is None else folder
        self.paths = [folder / f"bge-m3-triton-forward-{digest}-{slot}.lock" for slot in range(slots)]
        self._files: list[IO[bytes]] = [open(path, "a+b") for path in self.paths]  # noqa: SIM115 (held for life)
        self.waited_s = 0.0  # total time spent waiting, for logs and tests

    @classmethod
    def for_repository(cls, model_folder: str, slots: int) -> ForwardGate:
        """The gate shared by every model served from the repository holding `model_folder`."""
        return cls(os.path.realpath(os.path.dirname(os.path.normpath(model_folder))), slots)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a slot for the duration of the block: a free one if any, else wait on one."""
        held = None
        for handle in self._files:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            held = handle
            break
        if held is None:
            started = time.monotonic()
            held = self._files[os.getpid() % len(self._files)]
            fcntl.flock(held, fcntl.LOCK_EX)
            self.waited_s += time.monotonic() - started
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the files (and with them any slot still held)."""
        for handle in self._files:
            handle.close()
        self._files = []
