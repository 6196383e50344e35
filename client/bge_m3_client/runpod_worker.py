"""A RunPod serverless worker on top of bge-m3-triton, for people moving from the BGE-M3 RunPod worker.

Same job input (`{"texts", "isPassage", "batchSize"}`) and output (`{"results": [...]}` or
`{"error": ...}`); the model runs in Triton. Environment, with the worker's names and defaults:

| variable | default | meaning |
|---|---|---|
| `TRITON_URL` | localhost:8000 | the Triton server |
| `TRITON_PROTOCOL` | http | http or grpc |
| `MIN_CONCURRENCY` | 1 | jobs in flight, at least |
| `MAX_CONCURRENCY` | 4 | jobs in flight, at most |
| `SCALE_UP_THRESHOLD` | 0.05 | requests/s above which concurrency grows by one |
| `SCALE_DOWN_THRESHOLD` | 0.0 | requests/s at or below which it shrinks by one (0.0: when idle) |

The request rate is measured over the last `RATE_WINDOW_S` seconds (default 10).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bge_m3_client.adapters import handle_runpod_async
from bge_m3_client.client import AsyncBGEM3Client


class ConcurrencyModifier:
    """RunPod's `concurrency_modifier`: grow by one above the scale-up rate, shrink by one at or
    below the scale-down rate, always within [minimum, maximum]. Call `record()` once per job."""

    def __init__(self, minimum: int = 1, maximum: int = 4, scale_up: float = 0.05, scale_down: float = 0.0,
                 window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= MIN_CONCURRENCY <= MAX_CONCURRENCY, got {minimum} and {maximum}")
        if scale_down > scale_up:
            raise ValueError(f"SCALE_DOWN_THRESHOLD ({scale_down}) must not exceed SCALE_UP_THRESHOLD ({scale_up})")
        self.minimum, self.maximum = minimum, maximum
        self.scale_up, self.scale_down = scale_up, scale_down
        self.window_s = window_s
        self.clock = clock
        self._arrivals: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConcurrencyModifier:
        """Read the RunPod worker's variables."""
        return cls(int(env.get("MIN_CONCURRENCY", "1")), int(env.get("MAX_CONCURRENCY", "4")),
                   float(env.get("SCALE_UP_THRESHOLD", "0.05")), float(env.get("SCALE_DOWN_THRESHOLD", "0.0")),
                   float(env.get("RATE_WINDOW_S", "10")))

    def record(self) -> None:
        """Count one request now."""
        with self._lock:
            self._arrivals.append(self.clock())

    def rate(self) -> float:
        """Requests per second over the window."""
        with self._lock:
            horizon = self.clock() - self.window_s
            while self._arrivals and self._arrivals[0] < horizon:
                self._arrivals.popleft()
            return len(self._arrivals) / self.window_s

    def __call__(self, current: int) -> int:
        rate = self.rate()
        if rate > self.scale_up:
            current += 1
        elif rate <= self.scale_down:
            current -= 1
        return max(self.minimum, min(self.maximum, current))


def make_handler(env: Mapping[str, str] | None = None
                 ) -> tuple[Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], ConcurrencyModifier]:
    """The async job handler and the concurrency modifier to run it with."""
    env = os.environ if env is None else env
    url, protocol = env.get("TRITON_URL", "localhost:8000"), env.get("TRITON_PROTOCOL", "http")
    modifier = ConcurrencyModifier.from_env(env)
    clients: dict[int, AsyncBGEM3Client] = {}

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        modifier.record()
        # asyncio clients belong to the loop that made them: make one inside the worker's loop.
        loop = id(asyncio.get_running_loop())
        if loop not in clients:
            clients[loop] = AsyncBGEM3Client(url, protocol=protocol)
        return await handle_runpod_async(clients[loop], job)

    return handler, modifier


def main() -> None:
    """Start the RunPod serverless loop (needs `pip install 'bge-m3-client[runpod]'`)."""
    import runpod

    handler, modifier = make_handler()
    runpod.serverless.start({"handler": handler, "concurrency_modifier": modifier})


if __name__ == "__main__":
    main()
