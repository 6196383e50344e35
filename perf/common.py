"""What the perf scripts share: the benchmark checkpoint and the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())


def cpu_flags() -> str:
    """The CPU family/model and the matrix-multiply flags that decide the dtype (bf16, AMX, AVX-512, AVX2)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
        if not line.strip():
            break
    flags = set(fields.get("flags", "").split())
    shown = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}; {', '.join(shown) or 'no AVX2'}"


def machine() -> str:
    """`N cores, CPU model (family, model, flags)`, for every table's header."""
    return f"{os.cpu_count()} cores, {cpu_model()} ({cpu_flags()})"


def benchmark_checkpoint(preset: str) -> Path:
    """The random-weight benchmark checkpoint of `preset`, made once under .cache/perf-models."""
    from bge_m3_triton.ops.testmodel import make_test_model

    checkpoint = REPO / ".cache" / "perf-models" / preset
    if not (checkpoint / "config.json").is_file():
        make_test_model(checkpoint, preset, seed=0)
    return checkpoint


def publish(text: str, out: Path, stem: str) -> Path:
    """Print a result table and keep it as `out/<stem>-<date>.md`."""
    import datetime

    print(text)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M}.md"
    path.write_text(text + "\n")
    return path
