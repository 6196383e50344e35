"""Start a real `tritonserver` on this repository without Docker, from the `nvidia-pytriton` wheel.

The wheel bundles tritonserver 2.51, the Python backend and its stubs. The traps (see the README):
the stub links libpython, so the libdir of the interpreter that made our venv goes first on
`LD_LIBRARY_PATH`; the stub takes its prefix and site-packages from the `python` first on `PATH`
(it ignores `PYTHONPATH`), so the venv's `bin/` goes first there.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

from bge_m3_triton.core.settings import ENV_OVERRIDES
from bge_m3_triton.ops.processes import stop_process
from bge_m3_triton.ops.render import Deployment, render_repository
from bge_m3_triton.ops.watchdog import Watchdog, embed_served, model_ready, probe
from bge_m3_triton.serving.drain import clear_notice, post_notice

REPO_ROOT = Path(__file__).resolve().parents[3]
# Triton's exit timeout past the models' drain window: the forward pass stops within a sub-batch of the
# window's end (collector.ABANDON_JOIN_S at most), then the stubs unload (docs/reliability.md).
SHUTDOWN_MARGIN_S = 15


def exit_timeout_s(deployment: Deployment) -> int:
    """Triton's `--exit-timeout-secs` for a deployment: its drain window and the margin after it."""
    return int(deployment.value("drain_seconds")) + SHUTDOWN_MARGIN_S


@dataclasses.dataclass
class ServerOptions:
    """Where Triton listens and how it runs."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "0.0.0.0"
    log_verbose: int = 0
    exit_timeout_s: int = 0  # 0: the deployment's (`exit_timeout_s`)
    shm_bytes: int = 16 * 1024 * 1024
    extra_args: list[str] = dataclasses.field(default_factory=list)
    gateway_port: int = 0  # 0: no HTTP gateway
    gateway_args: list[str] = dataclasses.field(default_factory=list)
    watchdog_s: float = 30.0  # probe the embed model this often; exit when it stops answering (0: off)


def default_model_repository() -> Path:
    """The `model_repository/` of this checkout (or `BGE_M3_MODEL_REPOSITORY`)."""
    return Path(os.environ.get("BGE_M3_MODEL_REPOSITORY", REPO_ROOT / "model_repository"))


def pytriton_paths() -> tuple[Path, Path]:
    """(tritonserver's folder inside the pytriton package, the wheel's bundled libraries)."""
    try:
        import pytriton
    except ImportError:
        raise SystemExit("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0") from None
    package = Path(pytriton.__file__).resolve().parent
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def make_backend_dir(target: Path) -> Path:
    """A backend directory holding the Python backend and the stub for this interpreter's version."""
    server_dir, _ = pytriton_paths()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise SystemExit(f"the pytriton wheel has no Python backend stub for Python {version}")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (server_dir / "backends" / "python").iterdir():
        if source.is_file():
            _link(source, python_dir / source.name)
    _link(stub, python_dir / stub.name)
    return target


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment tritonserver and its stubs need to find libpython, our venv and the wheel's libs."""
    env = dict(os.environ if base is None else base)
    _, libs = pytriton_paths()
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.prefix) / "bin"), env.get("PATH", "")))
    return env


def installed_tritonserver() -> Path | None:
    """A tritonserver named by `TRITONSERVER` (NVIDIA's container: /opt/tritonserver/bin/tritonserver)."""
    path = os.environ.get("TRITONSERVER", "")
    return Path(path) if path else None


def server_command(repository: Path, backends: Path, options: ServerOptions) -> list[str]:
    """The tritonserver command line."""
    binary = installed_tritonserver() or pytriton_paths()[0] / "bin" / "tritonserver"
    return [
        str(binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--http-port={options.http_port}", f"--grpc-port={options.grpc_port}",
        f"--metrics-port={options.metrics_port}",
        f"--http-address={options.host}", f"--grpc-address={options.host}",
        "--model-control-mode=none", "--exit-on-error=true", "--strict-readiness=true",
        "--disable-auto-complete-config",
        f"--exit-timeout-secs={options.exit_timeout_s}",
        f"--log-verbose={options.log_verbose}",
        f"--backend-config=python,shm-default-byte-size={options.shm_bytes}",
        "--backend-config=python,shm-growth-byte-size=16777216",
        *options.extra_args,
    ]


def prepare(deployment: Deployment, workdir: Path, source: Path | None = None) -> tuple[Path, Path]:
    """Render the model repository and the backend directory under `workdir`."""
    repository = render_repository(source or default_model_repository(), workdir / "models", deployment)
    installed = installed_tritonserver()
    if installed is not None:  # a full Triton install brings its own backends and matching Python
        return repository, Path(os.environ.get("TRITON_BACKEND_DIR", installed.parent.parent / "backends"))
    backends = make_backend_dir(workdir / "backends")
    return repository, backends


def serve(deployment: Deployment, options: ServerOptions, workdir: Path | None = None,
          source: Path | None = None) -> int:
    """Run tritonserver (and the HTTP gateway, when asked) in the foreground until it exits.

    SIGINT/SIGTERM are passed on; when either process ends, the other is stopped. Returns the
    first non-zero exit code, else 0.
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bge-m3-triton-"))
    repository, backends = prepare(deployment, workdir, source)
    if not options.exit_timeout_s:
        options = dataclasses.replace(options, exit_timeout_s=exit_timeout_s(deployment))
    env = dict(os.environ) if installed_tritonserver() else server_environment()
    if env.pop(ENV_OVERRIDES, None):
        print(f"bge-m3-triton: {ENV_OVERRIDES} is ignored by the launcher: flags and environment variables "
              "are rendered into the served config.pbtxt files", file=sys.stderr)
    clear_notice(repository)
    # In a process group of its own, so the stubs it leaves behind if it dies can be stopped with it: an
    # orphaned stub would hold the forward gate of this repository and stall the next server on it.
    processes = [subprocess.Popen(server_command(repository, backends, options), env=env, start_new_session=True)]
    if options.gateway_port:
        processes.append(subprocess.Popen(gateway_command(options), env=dict(os.environ)))

    def forward(signum: int, _frame: object) -> None:
        post_notice(repository)  # the models drain their own queues (serving.drain), then Triton stops
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    dead: list[str] = []

    def stop_dead(reason: str) -> None:  # the watchdog's verdict: stop as on SIGTERM, then exit non-zero
        dead.append(reason)
        forward(signal.SIGTERM, None)

    watchdog = _watchdog(deployment, options, stop_dead)
    codes = _wait_first(processes)
    if watchdog is not None:
        watchdog.stop()
    _stop_group(processes[0].pid)
    names = ["tritonserver", "bge-m3-gateway"]
    for name, code in zip(names, codes):
        if code not in (0, -signal.SIGTERM, -signal.SIGINT):
            print(f"bge-m3-triton: {name} exited with code {code}; its log above gives the reason", file=sys.stderr)
    if dead:
        print(f"bge-m3-triton: {dead[0]}", file=sys.stderr)
        return EXIT_MODEL_DEAD
    return next((code for code in codes if code not in (0, -signal.SIGTERM, -signal.SIGINT)), 0)


EXIT_MODEL_DEAD = 3


def _watchdog(deployment: Deployment, options: ServerOptions, on_dead: Callable[[str], None]) -> Watchdog | None:
    if not options.watchdog_s or not embed_served(deployment.models()):
        return None
    host = "127.0.0.1" if options.host in ("0.0.0.0", "::", "") else options.host
    url = f"{host}:{options.http_port}"
    return Watchdog(lambda: probe(url, max(10.0, options.watchdog_s)), lambda: model_ready(url), options.watchdog_s,
                    on_dead).start()


def gateway_command(options: ServerOptions) -> list[str]:
    """The gateway's command line: this Python, talking gRPC to the Triton started beside it."""
    triton_host = "127.0.0.1" if options.host in ("0.0.0.0", "::", "") else options.host
    return [sys.executable, "-m", "bge_m3_gateway.cli", "--triton", f"{triton_host}:{options.grpc_port}",
            "--protocol", "grpc", "--host", options.host, "--port", str(options.gateway_port), *options.gateway_args]


def _wait_first(processes: list[subprocess.Popen[bytes]], grace_s: float = 30.0) -> list[int]:
    """Wait until one process exits, then stop the rest (SIGTERM, then SIGKILL after `grace_s`)."""
    while all(process.poll() is None for process in processes):
        try:
            processes[0].wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
    return [stop_process(process, grace_s) for process in processes]


def _stop_group(pgid: int) -> None:
    """Kill whatever is left of tritonserver's process group (stubs of a server that crashed)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source)
