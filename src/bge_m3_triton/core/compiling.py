"""The `compile` setting: the transformers model compiled by `torch.compile` (inductor) on CPU.

Why and where (docs/decisions/003-compile-with-amx.md): with AMX, torch's bf16 Linear runs so fast that
the work between the matmuls (GELU, layer norms, residual adds, copies) weighs far more than on other
CPUs; inductor fuses it into generated C++ and keeps the Linear weights prepacked in oneDNN's layout. The
runtime plan (core.plan) takes it for bf16 with AMX where a C++ compiler is found. Its price: time at start
and a packed copy of the Linear weights per instance (the loader then drops the mapped originals'
resident pages), and the numbers move by bf16 rounding.

How: `dynamic=True`, so one graph serves every (rows, tokens) shape; compiled before the first request by
running the model on a one-row batch, a two-row batch and a padded two-row batch (dynamo specializes
size-1 dimensions and the padding mask), as the model core calls it (`inference_mode`, `return_dict`).
Inductor compiles in-process (`compile_threads = 1`): Triton's stub is no plain Python for worker pools.
Its C++ wrapper (`cpp_wrapper`) calls the kernels from generated C++ and releases the GIL for the whole
graph (the stub's other threads want it while the forward pass runs). It reads its C++ templates in the
locale's encoding, which in a server started without a locale is ASCII: the stub's character type locale
is switched to C.UTF-8 then."""

from __future__ import annotations

import locale
import logging
import os
import time
from typing import Any

import torch

LOG = logging.getLogger(__name__)
WARM_UP_LENGTHS = ([8], [8, 8], [8, 5])  # rows of token counts: each shape class dynamo specializes


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
