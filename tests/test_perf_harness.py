"""perf/run.py's harness logic without running perf_analyzer: windows fitted to the machine, a level
that cannot stabilize reported in its row."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "perf"))
spec = importlib.util.spec_from_file_location("perf_run", REPO / "perf" / "run.py")
assert spec is not None and spec.loader is not None
perf_run = importlib.util.module_from_spec(spec)
sys.modules["perf_run"] = perf_run  # dataclasses look their module up
spec.loader.exec_module(perf_run)

UNSTABLE = """*** Measurement Settings ***
  Request concurrency: 2
  Pass [1] throughput: 0.9 infer/sec. Avg latency: 2100000 usec (std 90000 usec).
  Throughput: 1.25 infer/sec
Failed to obtain stable measurement within 8 measurement windows for concurrency 2. Please try to increase the \
--measurement-interval.
"""


def test_windows_grow_with_the_request_time() -> None:
    assert perf_run.fit_interval(8000, 10.0) == 8000  # fast requests: the base window
    assert perf_run.fit_interval(8000, 2100.0) == 42000  # 2.1 s requests: ~20 of them per window
    assert perf_run.fit_interval(8000, 60_000.0) == 120_000  # capped
    assert perf_run.fit_interval(8000, 270.0, 16) == 17280  # 16 concurrent: 4 batches of 16


def test_an_unstable_level_is_a_row_not_an_abort() -> None:
    reason = perf_run.describe_failure(UNSTABLE, 42000)
    assert reason == "did not stabilize in 8 windows (42 s windows); last window 1.25 texts/s"
    workload = perf_run.Workload("long", "bge_m3", Path("x.json"), 2048.0, 1, [2], {})
    good = {"Concurrency": "1", "Inferences/Second": "2.0", "p50 latency": "500000"}
    rows = perf_run.table_rows("bge-m3-triton", workload, "grpc", [good, {"Concurrency": "2", "error": reason}])
    assert len(rows) == 2 and "did not stabilize" in rows[1]
    header_columns = perf_run.HEADER.count("|")
    assert all(row.count("|") == header_columns for row in rows)


def test_the_ceiling_counts_the_models_flops() -> None:
    import ceiling

    small = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 6}
    per_layer = 2 * (4 * 1024 * 1024 + 2 * 1024 * 4096) + 4 * 256 * 1024
    assert ceiling.gflop_per_token(small) == (6 * per_layer + 2 * 1024 * 1025) / 1e9
    measured = ceiling.measure({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}, "float32", 1,
                               seconds=0.05)
    assert measured.gflops > 0 and set(measured.per_shape) == {"qkv+out", "ffn-up", "ffn-down"}
    assert measured.share(measured.tokens_per_s() / 2) == pytest.approx(0.5)


def test_the_int8_ceiling_times_the_quantized_kernel() -> None:
    import ceiling

    measured = ceiling.measure({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}, "int8", 1,
                               seconds=0.05)
    assert measured.dtype == "int8 (dynamic, FFN output fp32)" and measured.gflops > 0


def test_every_table_names_an_instruction_set_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a cap /proc/cpuinfo still lists AVX-512 and AMX: the header must say what torch was allowed."""
    import common

    for name in common.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert "capped" not in common.machine()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert common.machine().endswith("; capped by ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16")


def test_the_noise_floor_times_fixed_work_and_restores_the_threads() -> None:
    import noise
    import torch

    threads = torch.get_num_threads()
    measured = noise.measure(2.0, 1, "float32", repeats=30)
    assert torch.get_num_threads() == threads
    assert measured.threads == 1 and measured.layers >= 1 and 0 < measured.p50 <= measured.p99
    assert 0 <= measured.slow < 30 and "1 thread (" in measured.line()
