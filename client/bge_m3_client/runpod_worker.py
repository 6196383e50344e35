"""A RunPod serverless worker on top of bge-m3-triton, for people moving from the BGE-M3 RunPod worker.

Same job input (`{"texts", "isPassage", "batchSize"}`) and output (`{"results": [...]}` or
`{"error": ...}`); the model runs in Triton. Environment: `TRITON_URL` (default localhost:8000),
`TRITON_PROTOCOL` (http | grpc), `MAX_CONCURRENCY` (jobs in flight, default 4).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bge_m3_client.client import AsyncBGEM3Client


def make_handler(env: Mapping[str, str] | None = None) -> tuple[Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                                                                 int]:
    """The async job handler and the concurrency to run it with."""
    env = os.environ if env is None else env
    url, protocol = env.get("TRITON_URL", "localhost:8000"), env.get("TRITON_PROTOCOL", "http")
    concurrency = int(env.get("MAX_CONCURRENCY", "4"))
    clients: dict[int, AsyncBGEM3Client] = {}

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        # asyncio clients belong to the loop that made them: make one inside the worker's loop.
        loop = id(asyncio.get_running_loop())
        if loop not in clients:
            clients[loop] = AsyncBGEM3Client(url, protocol=protocol)
        return await clients[loop].handle_runpod(job)

    return handler, concurrency


def main() -> None:
    """Start the RunPod serverless loop (needs `pip install 'bge-m3-client[runpod]'`)."""
    import runpod

    handler, concurrency = make_handler()
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda _current: concurrency})


if __name__ == "__main__":
    main()
