"""Shared fixtures: generated checkpoints and a real Triton server started by our launcher."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bge_m3_triton.ops import processes
from bge_m3_triton.ops.processes import Gateway, Server, free_ports, stub_pid, stub_pids, tree_rss_mib

__all__ = ["Gateway", "Server", "free_ports", "start_server", "stub_pid", "stub_pids", "tree_rss_mib"]

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BGE_M3_TEST_CACHE", REPO / ".cache" / "test-models"))
# The CPU instances' shared weight files (core/shared_weights.py) of every test server and model: here,
# not in the machine's temp folder.
SHARED_WEIGHTS = REPO / ".cache" / "shared-weights"
os.environ.setdefault("BGE_M3_SHARED_WEIGHTS_DIR", str(SHARED_WEIGHTS))


def checkpoint(name: str, seed: int, reranker: bool = False, weights_format: str = "safetensors") -> Path:
    """A tiny generated checkpoint, made once and cached (deterministic per seed)."""
    from bge_m3_triton.ops.testmodel import make_test_model

    folder = CACHE / name
    if not (folder / "config.json").is_file():
        make_test_model(folder, "tiny", seed=seed, reranker=reranker, weights_format=weights_format)
    return folder


@pytest.fixture(scope="session")
def m3_checkpoint() -> Path:
    return checkpoint("m3-tiny-safetensors", seed=0)


@pytest.fixture(scope="session")
def m3_bin_checkpoint() -> Path:
    return checkpoint("m3-tiny-bin", seed=1, weights_format="bin")


@pytest.fixture(scope="session")
def reranker_checkpoint() -> Path:
    return checkpoint("reranker-tiny", seed=2, reranker=True)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, m3_checkpoint: Path,
           reranker_checkpoint: Path) -> Iterator[Server]:
    """The main test server: embed, combined rerank and cross-encoder models, fp32 on CPU, two instances
    per model (shared weights, one forward gate; the other test servers run the default one)."""
    tmp = tmp_path_factory.mktemp("server")
    running = start_server(tmp, ["--model", str(m3_checkpoint), "--reranker", str(reranker_checkpoint),
                                 "--dtype", "float32", "--queue-delay-us", "20000", "--instances", "2",
                                 "--workdir", str(tmp / "work")],
                           ["bge_m3", "bge_m3_rerank", "bge_reranker"])
    yield running
    running.stop()


_RUNNING: list[pytest.Item] = []  # the test being set up or run


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _RUNNING[:] = [item]


def start_server(tmp: Path, args: list[str], models: list[str], env: dict[str, str] | None = None) -> Server:
    """`processes.start_server`, for tests of the server and end-to-end tiers only (pytest markers), so the
    unit tier (`scripts/test.sh --unit`) never starts one by accident."""
    item = _RUNNING[0] if _RUNNING else None
    if item is not None and not (item.get_closest_marker("server") or item.get_closest_marker("e2e")):
        raise RuntimeError(f"{item.nodeid} starts a Triton server: mark it `server` or `e2e`")
    return processes.start_server(tmp, args, models, env)


GATEWAY_KEY = "test-key-123"


@pytest.fixture(scope="session")
def gateway(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway in front of the main test server, with an API key and small limits to test."""
    running = Gateway(server.grpc, tmp_path_factory.mktemp("gateway") / "gateway.log", "--max-inputs", "64",
                      "--max-body-bytes", "2000000", env={"BGE_M3_API_KEY": GATEWAY_KEY})
    yield running
    running.stop()
