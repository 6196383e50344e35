"""Choosing the torch device, dtype and thread count a model runs with."""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import torch

LOG = logging.getLogger(__name__)
_PROBE_SHAPE = (512, 1024, 1024)  # rows, in, out: a sub-batch through a BGE-M3-wide Linear layer
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                "int8": torch.float32}  # int8: fp32 weights whose Linear layers are then quantized (CPU only)


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX) and torch's oneDNN may use it.

    The CPU's flags alone are not enough: `ONEDNN_MAX_CPU_ISA=AVX2` (or a torch built without
    those kernels) leaves bf16 emulated and ~100x slower although /proc/cpuinfo lists avx512_bf16.
    """
    if not runtime_bf16_supported():
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def runtime_bf16_supported() -> bool:
    """Whether this torch runs bf16 matmuls on oneDNN's native kernels here."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_uses_amx() -> bool:
    """True when oneDNN may run bf16 matmuls on AMX tiles: torch finds them usable on this CPU and OS, and
    `ONEDNN_MAX_CPU_ISA` (or `DNNL_MAX_CPU_ISA`) does not cap oneDNN below AMX (`AVX512_CORE_BF16` leaves a
    Sapphire Rapids on the AVX512-BF16 kernels AMD's Zen 4 and Zen 5 run, though at its own, lower rates)."""
    try:
        if not torch.cpu._is_amx_tile_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return cap in ("", "ALL", "DEFAULT") or "AMX" in cap


def bf16_speedup() -> float:
    """bf16's matmul rate over fp32's on this CPU, on the current threads, measured once per thread count.

    A CPU can have native bf16 and still multiply it slower than fp32: a Sapphire Rapids whose kernel or
    hypervisor does not enable AMX (Linux before 5.16, e.g. Ubuntu 22.04's 5.15) leaves oneDNN on its
    AVX512-BF16 kernels, measured at 0.62-0.80x of fp32, while AMX runs 7x fp32 and an AMD Zen 4 about 2x
    (docs/decisions/004-bf16-probe.md)."""
    return _bf16_speedup(torch.get_num_threads())[0]


@functools.cache
def _bf16_speedup(threads: int) -> tuple[float, tuple[float, float]]:
    """bf16's matmul rate over fp32's at `_PROBE_SHAPE`: the dtypes take turns, two warm-ups then the best of
    five each (~50 ms), so a model loading beside this one slows both alike; logged once, as it is cached."""
    rows, width, out = _PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, width, generator=generator)
    weight = torch.randn(out, width, generator=generator)
    pairs = {dtype: (inputs.to(dtype), weight.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, float("inf"))
    with torch.inference_mode():
        for attempt in range(7):
            for dtype, (x, w) in pairs.items():
                start = time.perf_counter()
                torch.nn.functional.linear(x, w)
                if attempt >= 2:
                    best[dtype] = min(best[dtype], time.perf_counter() - start)
    fp32, bf16 = (2 * rows * width * out / best[dtype] / 1e9 for dtype in pairs)
    from bge_m3_triton.core.plan import BF16_MIN_SPEEDUP

    if bf16 < BF16_MIN_SPEEDUP * fp32:
        LOG.warning("dtype auto: bf16 matmuls run at %.0f GFLOP/s here against fp32's %.0f (%.2fx), so fp32; "
                    "--dtype bfloat16 takes bf16 anyway (half the weight memory, faster lone queries)",
                    bf16, fp32, bf16 / fp32)
    else:
        LOG.info("dtype auto: bf16 matmuls %.1fx fp32's rate here (%.0f against %.0f GFLOP/s)", bf16 / fp32,
                 bf16, fp32)
    return bf16 / fp32, (fp32, bf16)


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N`; a CUDA device that is not there is an error that says so."""
    device = torch.device("cuda:0" if name == "cuda" else name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for, but torch sees no CUDA device")
        if (device.index or 0) >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype weights load in for the dtype setting `name` on `device`, as the runtime plan decides
    it (core.plan: `auto` by the GPU's compute capability, or by whether bf16 is native and pays off on
    this CPU); for the tools that load models outside a server (perf/)."""
    from bge_m3_triton.core.plan import MachineFacts, plan
    from bge_m3_triton.core.settings import ModelSettings

    settings = ModelSettings(model="(dtype only)", dtype=name, device=str(device))
    return TORCH_DTYPES[plan(settings, MachineFacts.gather(settings, str(device))).dtype]


def configure_threads(requested: int) -> int:
    """Set torch's intra-op threads: `requested`, or the cores this process may use when 0."""
    threads = requested or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization (weights int8 per tensor, activations quantized per batch at run time)
    with torch's own `quantize_dynamic`, of every `nn.Linear` except the feed-forward output projections
    (`*.output.dense` outside attention), which stay fp32. For CPUs without native bf16.

    Those projections take the GELU outputs, where a trained encoder's outlier activations live: with
    them quantized, multilingual-e5-small's dense vectors fell to cos 0.979 and ColBERT to 0.853 against
    fp32; kept in fp32, 0.996 and 0.969 (README: Performance, precision)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    names = {name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and not is_ffn_output(name)}
    with warnings.catch_warnings():  # torch points eager-mode users at torchao; the kernels are the same
        warnings.simplefilter("ignore")
        quantized: torch.nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, names, dtype=torch.qint8)
        return quantized


def is_ffn_output(name: str) -> bool:
    """Whether a module name is an XLM-R layer's feed-forward output projection (kept fp32 under int8)."""
    return name.endswith("output.dense") and "attention" not in name
