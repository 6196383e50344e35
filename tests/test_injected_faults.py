"""A model that fails on some inputs, inside a real server: only those requests fail, with the message,
batch-mates and the next batch are served, and the failures show in our error metric."""

from __future__ import annotations

import asyncio
import shutil
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, start_server

from bge_m3_client import AsyncBGEM3Client, InferenceError

FAULTY_MODEL_PY = '''
"""Test-only: the real bge_m3 adapter, its forward pass made to fail on any batch holding "poison pill"."""
import importlib.util

from bge_m3_triton.ops.launcher import REPO_ROOT

spec = importlib.util.spec_from_file_location("real_bge_m3", REPO_ROOT / "model_repository/bge_m3/1/model.py")
real = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real)


class TritonPythonModel(real.TritonPythonModel):
    def initialize(self, args):
        super().initialize(args)
        model = self.service.model
        encode = model.encode_tokenized
        poison = model.tokenize(["poison pill"], [512]).ids[0]

        def encode_or_fail(tokens, *args, **kwargs):
            if poison in tokens.ids:
                raise RuntimeError("injected fault")
            return encode(tokens, *args, **kwargs)

        model.encode_tokenized = encode_or_fail
'''


def test_only_the_failing_requests_fail(tmp_path: Path, m3_checkpoint: Path) -> None:
    source = tmp_path / "repository"
    shutil.copytree(REPO / "model_repository" / "bge_m3", source / "bge_m3")
    (source / "bge_m3" / "1" / "model.py").write_text(FAULTY_MODEL_PY)
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
