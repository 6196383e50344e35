"""The launcher's watchdog: a server whose embed model no longer answers exits, so a restart policy acts.

Triton 2.51 does not restart a crashed Python stub and keeps answering `/v2/health/ready` with 200, while
every request fails with "Stub process ... is not healthy". Docker Compose restarts a container on exit,
not on a failed healthcheck, so the launcher probes the model itself: once Triton has said the model is
ready (loading is not dying), a probe every `interval_s` sends a real (one-text) inference; `misses`
failures in a row stop the server.
A probe that times out or is refused for a full queue is a busy server, not a dead one, and does not
count: a saturated pod must not be killed for being saturated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bge_m3_client import BGEM3Client, RequestRejectedError, RequestTimeoutError
from bge_m3_client import contract as c

LOG = logging.getLogger(__name__)
MISSES = 3


def model_ready(url: str) -> bool:
    """Whether Triton at `url` (HTTP) says the embed model is loaded and ready."""
    import tritonclient.http as http

    try:
        client = http.InferenceServerClient(url, connection_timeout=5, network_timeout=5)
        try:
            return bool(client.is_model_ready(c.EMBED_MODEL))
        finally:
            client.close()
    except Exception:
        return False


def probe(url: str, timeout_s: float) -> Exception | None:
    """One real inference through Triton's HTTP endpoint `url`: None when it answered, else the error
    (a timeout or a full queue comes back as None: busy is alive)."""
    try:
        with BGEM3Client(url, timeout=timeout_s, retries=0) as client:
            client.encode(["health check"], return_sparse=False)
    except (RequestTimeoutError, RequestRejectedError):
        return None
    except Exception as exc:  # any other failure: the model may be dead
        return exc
    return None


class Watchdog:
    """Calls `on_dead(reason)` once, from its own thread, when the model stops answering for good."""

    def __init__(self, check: Callable[[], Exception | None], ready: Callable[[], bool], interval_s: float,
                 on_dead: Callable[[str], None], misses: int = MISSES) -> None:
        self.check = check
        self.ready = ready
        self.interval_s = interval_s
        self.on_dead = on_dead
        self.misses = misses
        self.armed = False  # probes count once Triton has said the model is ready (loading is not dying)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bge-m3-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        missed = 0
        while not self._stop.wait(self.interval_s):
            if not self.armed:
                self.armed = self.ready()
                continue
            error = self.check()
            if error is None:
                missed = 0
                continue
            missed += 1
            LOG.warning("the embed model did not answer (%d of %d): %s", missed, self.misses, error)
            if missed >= self.misses:
                self.on_dead(f"the embed model stopped answering ({error}); stopping so the server can be restarted")
                return


def embed_served(models: list[str]) -> bool:
    """Whether the deployment serves the embed model the watchdog probes."""
    return c.EMBED_MODEL in models
