"""The `compile inductor` setting (core/compiling.py): the model compiled before the first request, the
same numbers as eager within float rounding, and no compiling after start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from reference import TEXTS

from bge_m3_triton.core import compiling, devices
from bge_m3_triton.core.cross_encoder import CrossEncoder
from bge_m3_triton.core.m3 import M3Model
from bge_m3_triton.core.settings import ModelSettings


@pytest.mark.slow
def test_compiled_model_core_matches_eager_and_compiles_only_at_start(m3_checkpoint: Path) -> None:
    from torch._dynamo.utils import counters

    compiled = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="float32", device="cpu",
                                          compile="inductor"))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    eager = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="float32", device="cpu"))
    lengths = [8192] * len(TEXTS)
    for got, want in zip(compiled.encode(TEXTS, lengths), eager.encode(TEXTS, lengths)):
        np.testing.assert_allclose(got.dense, want.dense, atol=1e-5)
        np.testing.assert_allclose(got.colbert, want.colbert, atol=1e-5)
        assert got.sparse_ids.tolist() == want.sparse_ids.tolist()
        np.testing.assert_allclose(got.sparse_weights, want.sparse_weights, atol=1e-5)
    compiled.encode(TEXTS[:1], [8192])  # one row
    compiled.encode(TEXTS[:3], [16, 8192, 8192])  # rows of several lengths
    assert counters["stats"]["unique_graphs"] == graphs, "a request's shape compiled a new graph"


@pytest.mark.slow
def test_compiled_cross_encoder_scores_as_eager(reranker_checkpoint: Path) -> None:
    settings = ModelSettings(model=str(reranker_checkpoint), dtype="float32", device="cpu")
    eager = CrossEncoder.load(settings)
    compiled = CrossEncoder.load(ModelSettings(model=str(reranker_checkpoint), dtype="float32", device="cpu",
                                               compile="inductor"))
    pairs = eager.pair_ids(["what is bge m3?"] * 3, TEXTS[:3], 512, 512)
    np.testing.assert_allclose(compiled.score(pairs, [False] * 3), eager.score(pairs, [False] * 3), atol=1e-5)


def test_cpp_compiler_is_found_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe answers None rather than raising where `CXX` names no compiler (inductor's search is
    cached per process, so this asks with a fresh cache)."""
    from torch._inductor import cpp_builder

    monkeypatch.setattr(cpp_builder.config.cpp, "cxx", ("/nonexistent/c++",))
    cpp_builder.cpp_compiler_search.cache_clear()
    try:
        assert compiling.cpp_compiler() is None
    finally:
        cpp_builder.cpp_compiler_search.cache_clear()


def test_amx_is_not_in_use_under_an_isa_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ONEDNN_MAX_CPU_ISA` below AMX makes oneDNN compute as on a CPU without it, and `auto` follows."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    for cap, uses in (("", True), ("ALL", True), ("AVX512_CORE_AMX", True), ("avx512_core_bf16", False),
                      ("AVX2", False)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert devices.cpu_uses_amx() is uses, cap
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not devices.cpu_uses_amx()
