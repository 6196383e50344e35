"""The drain notice: how the models of a server learn that it is shutting down.

Triton keeps a model loaded, and its `finalize` uncalled, until every request it handed the model has
had its response. The collector (serving.collector) answers requests from its own queue after
`execute` has returned, so Triton would wait for all of that work, past its exit timeout, then exit
with an error (issue #32: a crash, then a hang, on every scale-down under load). So the launcher, on
SIGTERM or SIGINT, first writes a notice into the served repository, the time the signal came, and
then passes the signal on; every collector watches for the notice, stops taking requests, finishes
what it can within its drain window and answers the rest UNAVAILABLE, after which Triton unloads the
models and exits 0 (docs/reliability.md).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

NOTICE = ".bge-m3-drain"
POLL_S = 0.2  # how often a model looks for the notice: a stat call


def notice_path(repository: Path) -> Path:
    """Where the notice of the served repository `repository` goes."""
    return repository / NOTICE


def repository_of(model_folder: str) -> Path:
    """The served repository holding a model's folder (Triton's `args["model_repository"]`)."""
    return Path(os.path.realpath(os.path.dirname(os.path.normpath(model_folder))))


def post_notice(repository: Path) -> None:
    """Tell every model of the repository that the server is shutting down, now."""
    path = notice_path(repository)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{time.time():.3f}\n")
    temporary.replace(path)  # whole or absent: a watcher never reads half of it


def clear_notice(repository: Path) -> None:
    """Remove a notice left by an earlier run of the same repository folder (a restarted container)."""
    notice_path(repository).unlink(missing_ok=True)


class NoticeWatcher:
    """Calls `on_notice(seconds_since_the_signal)` once, from its own thread, when a notice newer than
    the watcher appears in `repository`."""

    def __init__(self, repository: Path, on_notice: Callable[[float], None]) -> None:
        self.path = notice_path(repository)
        self.on_notice = on_notice
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bge-m3-drain-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            signalled = self._read()
            if signalled is not None and signalled >= self.started - 1.0:  # older: an earlier run's
                self.on_notice(max(0.0, time.time() - signalled))
                return

    def _read(self) -> float | None:
        try:
            return float(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
