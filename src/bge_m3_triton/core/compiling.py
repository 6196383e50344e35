"""The `compile` setting: the transformers model compiled by `torch.compile` (inductor) on CPU.

Why: with AMX, torch's bf16 Linear runs at ~3 TFLOP/s on two cores, so the work between the matmuls
(GELU, layer norms, residual adds, copies) weighs eight times more than on an AVX-512 CPU. Inductor fuses
that work into generated C++ loops and, with its weights frozen, keeps the Linear weights prepacked
in oneDNN's layout: through Triton on a Sapphire Rapids-class Xeon, 16 concurrent passages 1.12-1.15x and
a lone query ~1.5x faster (README: Performance). So `auto` (the default) takes it for bf16 where oneDNN uses
AMX and a C++ compiler is on PATH, and nowhere else (fp32 under the AVX2 cap gained nothing; bf16 without
AMX is not measured on real silicon). What it costs: 25-80 s per model at start, and inductor's packed
copy of the Linear weights per instance (not shared between instances; the loader then drops the mapped
originals' resident pages), and the numbers move by bf16 rounding (dense cosine 0.99995 against eager).

How: `dynamic=True`, so one graph serves every (rows, tokens) shape; compiled before the first request by
running the model on a one-row batch, a two-row batch and a padded two-row batch (dynamo specializes
size-1 dimensions and the padding mask), as the model core calls it (`inference_mode`, `return_dict`).
Inductor compiles in-process (`compile_threads = 1`): Triton's stub is no plain Python for worker pools.
Its C++ wrapper (`cpp_wrapper`) calls the kernels from generated C++ instead of a Python function and
releases the GIL for the whole graph (the Python wrapper holds it through every fused kernel, while the
stub's other threads want it): through Triton on a Sapphire Rapids-class Xeon with AMX, a lone query on
the 6-layer model 1.07-1.15x faster (two servers side by side, in both start orders), passages as fast, at
full size no change in the model core; the same numbers and memory, a few seconds more at start.
It reads its C++ templates in the locale's encoding, which in a server started without a locale is ASCII:
the stub's character type locale is switched to C.UTF-8 then.
"""

from __future__ import annotations

import locale
import logging
import os
import time
from typing import Any

import torch

from bge_m3_triton.core import devices

LOG = logging.getLogger(__name__)
WARM_UP_LENGTHS = ([8], [8, 8], [8, 5])  # rows of token counts: each shape class dynamo specializes


def wanted(setting: str, device: torch.device, dtype_setting: str, dtype: torch.dtype) -> bool:
    """Whether to compile: `inductor` on CPU, except for int8 (torch's dynamic int8 Linear layers); `auto`
    on CPUs whose oneDNN runs bf16 on AMX, for bf16 weights, where a C++ compiler is on PATH."""
    if setting == "auto":
        if device.type != "cpu" or dtype != torch.bfloat16 or not devices.cpu_uses_amx():
            return False
        if cpp_compiler() is None:
            LOG.info("compile auto: no C++ compiler (g++) on PATH, so running eager; with one, inductor "
                     "serves bf16 with AMX 1.1-1.2x faster")
            return False
        return True
    if setting != "inductor":
        return False
    if device.type != "cpu" or dtype_setting == "int8":
        LOG.warning("compile inductor runs on CPU with float32, bfloat16 or float16 weights only; running eager")
        return False
    return True


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would build with (`CXX`, else g++), or None when there is none."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        return get_cpp_compiler()
    except Exception:  # inductor raises its own InvalidCxxCompiler, or fails probing a broken one
        return None


def compile_model(model: Any) -> Any:
    """`model` compiled by inductor with frozen weights, and run once on each warm-up shape."""
    import torch._inductor.config as inductor

    _utf8_locale()
    inductor.freezing = True
    inductor.compile_threads = 1
    inductor.cpp_wrapper = os.environ.get("TORCHINDUCTOR_CPP_WRAPPER", "1") != "0"  # torch's own switch, on here
    compiled: Any = torch.compile(model, dynamic=True)
    pad = int(getattr(model.config, "pad_token_id", None) or 1)
    start = time.perf_counter()
    with torch.inference_mode():
        for lengths in WARM_UP_LENGTHS:
            ids = torch.full((len(lengths), max(lengths)), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, count in enumerate(lengths):
                ids[row, :count] = torch.arange(5, 5 + count)
                mask[row, :count] = 1
            compiled(input_ids=ids, attention_mask=mask, return_dict=True)
    LOG.info("compiled the model with inductor in %.1f s", time.perf_counter() - start)
    return compiled


def _utf8_locale() -> None:
    """Make files open as UTF-8 by default (inductor's template files hold non-ASCII characters)."""
    if locale.getpreferredencoding(False).lower().replace("-", "") == "utf8":
        return
    try:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    except locale.Error:
        LOG.warning("no C.UTF-8 locale: inductor may fail to read its templates; start the server with LANG=C.UTF-8")
