"""Shared fixtures: generated checkpoints and a real Triton server started by our launcher."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BGE_M3_TEST_CACHE", REPO / ".cache" / "test-models"))
SERVER_START_TIMEOUT_S = 180


def checkpoint(name: str, seed: int, reranker: bool = False, weights_format: str = "safetensors") -> Path:
    """A tiny generated checkpoint, made once and cached (deterministic per seed)."""
    from bge_m3_triton.testmodel import make_test_model

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


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Server:
    """A `bge-m3-triton serve` process on loopback ports."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log = log
        command = [sys.executable, "-m", "bge_m3_triton.cli", "serve", "--host", "127.0.0.1",
                   f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
                   f"--metrics-port={self.metrics_port}", *args]
        self.process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def url(self, protocol: str) -> str:
        return self.http if protocol == "http" else self.grpc

    def wait_ready(self, models: list[str]) -> None:
        import tritonclient.http as http

        # A keep-alive connection left open would hold up the server's shutdown: close it.
        client = http.InferenceServerClient(self.http)
        try:
            self._poll_ready(client, models)
        finally:
            client.close()

    def _poll_ready(self, client: object, models: list[str]) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if all(client.is_model_ready(m) for m in models):  # type: ignore[attr-defined]
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready in {SERVER_START_TIMEOUT_S}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(tmp: Path, args: list[str], models: list[str]) -> Server:
    server = Server(args, tmp / "server.log")
    try:
        server.wait_ready(models)
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, m3_checkpoint: Path,
           reranker_checkpoint: Path) -> Iterator[Server]:
    """The main test server: embed, combined rerank and cross-encoder models, fp32 on CPU."""
    tmp = tmp_path_factory.mktemp("server")
    running = start_server(tmp, ["--model", str(m3_checkpoint), "--reranker", str(reranker_checkpoint),
                                 "--dtype", "float32", "--queue-delay-us", "20000", "--workdir", str(tmp / "work")],
                           ["bge_m3", "bge_m3_rerank", "bge_reranker"])
    yield running
    running.stop()


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the launcher, tritonserver, the Python stubs)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            todo += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            pass
    return found


def tree_rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process tree, MiB: current (`VmRSS`) or each process's peak (`VmHWM`)."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith(field)), 0)
    return total / 1024


def stub_pid(server: Server, model: str) -> int:
    """The Python backend stub process serving `model`."""
    for member in process_tree(server.process.pid):
        try:
            command = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "triton_python_backend_stub" in command and f"/{model}/1/model.py" in command:
            return member
    raise LookupError(f"no stub process for {model}")


class Gateway:
    """A `bge-m3-gateway` process (uvicorn) on a loopback port, in front of a Triton gRPC address."""

    def __init__(self, triton_grpc: str, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_ports(1)[0]
        self.log = log
        command = [sys.executable, "-m", "bge_m3_gateway.cli", "--triton", triton_grpc, "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning", *args]
        self.process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})
        self.wait_listening()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_listening(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"gateway not listening in {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


GATEWAY_KEY = "test-key-123"


@pytest.fixture(scope="session")
def gateway(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway in front of the main test server, with an API key and small limits to test."""
    running = Gateway(server.grpc, tmp_path_factory.mktemp("gateway") / "gateway.log", "--max-inputs", "64",
                      "--max-body-bytes", "2000000", env={"BGE_M3_API_KEY": GATEWAY_KEY})
    yield running
    running.stop()
