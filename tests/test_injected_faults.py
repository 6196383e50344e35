"""A model that fails on some inputs, inside a real server: only those requests fail, with the message,
batch-mates and the next batch are served, and the failures show in our error metric."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from conftest import start_server
from injected import FAULTY, repository

from bge_m3_client import AsyncBGEM3Client, InferenceError

pytestmark = pytest.mark.server


def test_only_the_failing_requests_fail(tmp_path: Path, m3_checkpoint: Path) -> None:
    source = repository(tmp_path, FAULTY)
    server = start_server(tmp_path, ["--model", str(m3_checkpoint), "--dtype", "float32", "--model-repository",
                                     str(source), "--models", "bge_m3", "--queue-delay-us", "100000"], ["bge_m3"])
    try:
        async def burst() -> list:
            async with AsyncBGEM3Client(server.grpc, protocol="grpc", retries=0) as client:
                calls = [client.encode([f"fine {i}"]) if i % 3 else client.encode(["poison pill"]) for i in range(9)]
                return await asyncio.gather(*calls, return_exceptions=True)

        outcomes = asyncio.run(burst())
        for i, outcome in enumerate(outcomes):
            if i % 3:
                assert not isinstance(outcome, Exception), outcome
            else:
                assert isinstance(outcome, InferenceError)
                assert "inference failed: RuntimeError: injected fault" in str(outcome)
                assert "Traceback" not in str(outcome) and ".py" not in str(outcome)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
        line = next(x for x in metrics.splitlines() if x.startswith("bge_m3_request_errors_total")
                    and 'code="internal"' in x)
        assert float(line.rsplit(" ", 1)[1]) == pytest.approx(3)

        async def after() -> list:
            async with AsyncBGEM3Client(server.http) as client:
                return await client.encode(["the next batch"])

        assert asyncio.run(after())[0].tokens > 0
    finally:
        server.stop()
