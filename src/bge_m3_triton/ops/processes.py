"""Local processes for tests and benchmarks: `bge-m3-triton serve` and `bge-m3-gateway` on loopback
ports, waited for until ready, stopped cleanly; and the memory of a process tree."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

SERVER_START_TIMEOUT_S = 180


def stop_process(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """Stop a process (SIGTERM, then SIGKILL after `grace_s`) and return its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# Ports for test and benchmark servers, leased so that no two processes of ours take the same one. A port
# the kernel handed out (bind to 0, then close) could be handed out again, to an outgoing connection or
# another test, before the server binds it; these come from below the kernel's ephemeral range, which it
# never hands out by itself, and each is held by an `flock` for the life of the process that leased it.
_LEASES: list[IO[bytes]] = []
_LEASE_LOCK = threading.Lock()
PORT_FLOOR = 20_000


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as probe:  # no SO_REUSEADDR: a port still in TIME_WAIT is skipped too
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` loopback ports that nothing listens on, leased to this process until it exits."""
    folder = Path(tempfile.gettempdir()) / "bge-m3-triton-ports"
    folder.mkdir(exist_ok=True)
    top = max(_ephemeral_floor(), PORT_FLOOR + 1000)
    span = top - PORT_FLOOR
    start = (os.getpid() * 7919 + len(_LEASES) * 13) % span  # processes start at different places
    ports: list[int] = []
    with _LEASE_LOCK:
        for offset in range(span):
            port = PORT_FLOOR + (start + offset) % span
            handle = (folder / f"{port}.lock").open("a+b")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            if not _bindable(port):
                handle.close()
                continue
            _LEASES.append(handle)
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports between {PORT_FLOOR} and {top}")


class Server:
    """A `bge-m3-triton serve` process on loopback ports."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log = log
        command = [sys.executable, "-m", "bge_m3_triton.ops.cli", "serve", "--host", "127.0.0.1",
                   f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
                   f"--metrics-port={self.metrics_port}", *args]
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})

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
                # ready when the models are, and the metrics endpoint listens (Triton opens it last)
                if all(client.is_model_ready(m) for m in models) and _listening(self.metrics_port):  # type: ignore[attr-defined]
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready in {SERVER_START_TIMEOUT_S}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 60 s; the exit code."""
        try:
            return stop_process(self.process, 60)
        finally:
            self._log_file.close()

    def forward_totals(self, model: str = "bge_m3") -> dict[str, float]:
        """The model's `bge_m3_*_total` counters from the server's metrics, summed over their other labels
        and named without `bge_m3_` and `_total` (forward_passes, forward_seconds, answer_seconds...)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as reply:
            lines = reply.read().decode().splitlines()
        totals: dict[str, float] = {}
        for line in lines:
            name, _, rest = line.partition("{")
            if name.startswith("bge_m3_") and name.endswith("_total") and f'model="{model}"' in rest:
                key = name.removeprefix("bge_m3_").removesuffix("_total")
                totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return totals


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_server(tmp: Path, args: list[str], models: list[str], env: dict[str, str] | None = None) -> Server:
    """Start `bge-m3-triton serve` with `args` (plus `env` over this environment) and wait for `models`."""
    server = Server(args, tmp / "server.log", env)
    try:
        server.wait_ready(models)
    except Exception:
        server.stop()
        raise
    return server


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
    """Resident memory of a process tree, MiB: current (`VmRSS`), each process's peak (`VmHWM`), or the
    proportional set size (`Pss`: pages shared by several processes, such as mapped shared weights,
    counted once in all)."""
    total = 0
    source = "smaps_rollup" if field == "Pss" else "status"
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/{source}").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith(field + ":")), 0)
    return total / 1024


def stub_pids(server: Server, model: str) -> list[int]:
    """The Python backend stub processes serving `model`, one per instance."""
    found = []
    for member in process_tree(server.process.pid):
        try:
            command = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "triton_python_backend_stub" in command and f"/{model}/1/model.py" in command:
            found.append(member)
    return found


def stub_pid(server: Server, model: str) -> int:
    """A Python backend stub process serving `model` (the first found)."""
    found = stub_pids(server, model)
    if not found:
        raise LookupError(f"no stub process for {model}")
    return found[0]


class Gateway:
    """A `bge-m3-gateway` process (uvicorn) on a loopback port, in front of a Triton gRPC address."""

    def __init__(self, triton_grpc: str, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_ports(1)[0]
        self.log = log
        command = [sys.executable, "-m", "bge_m3_gateway.cli", "--triton", triton_grpc, "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning", *args]
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT,
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
            if _listening(self.port):
                return
            time.sleep(0.2)
        raise TimeoutError(f"gateway not listening in {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 30 s; the exit code."""
        try:
            return stop_process(self.process, 30)
        finally:
            self._log_file.close()
