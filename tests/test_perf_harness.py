"""The benchmark harness's logic without running perf_analyzer (perf/ is a package: `python -m perf`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from perf import ceiling, common, noise
from perf import run as perf_run

UNSTABLE = """*** Measurement Settings ***
  Request concurrency: 2
  Pass [1] throughput: 0.9 infer/sec. Avg latency: 2100000 usec (std 90000 usec).
  Throughput: 1.25 infer/sec
Failed to obtain stable measurement within 8 measurement windows for concurrency 2. Please try to increase the \
--measurement-interval.
"""


@given(st.integers(1000, 20_000), st.floats(0.1, 200_000), st.integers(1, 64))
def test_a_window_holds_enough_requests_and_is_bounded(base_ms: int, request_ms: float, concurrency: int) -> None:
    """A window never shrinks below the base, holds ~20 requests and 4 batches of the concurrency where that
    fits in two minutes, and never passes two minutes: a slow machine gets longer windows, not failures."""
    window = perf_run.fit_interval(base_ms, request_ms, concurrency)
    assert min(base_ms, 120_000) <= window <= 120_000
    needed = max(20 * request_ms, 4 * concurrency * request_ms)
    assert window >= min(needed, 120_000) - 1


def test_an_unstable_level_is_a_row_not_an_abort() -> None:
    reason = perf_run.describe_failure(UNSTABLE, 42000)
    assert reason == "did not stabilize in 8 windows (42 s windows); last window 1.25 texts/s"
    workload = perf_run.Workload("long", "bge_m3", Path("x.json"), 2048.0, 1, [2], {})
    good = {"Concurrency": "1", "Inferences/Second": "2.0", "p50 latency": "500000"}
    rows = perf_run.table_rows("bge-m3-triton", workload, "grpc", [good, {"Concurrency": "2", "error": reason}])
    assert len(rows) == 2 and "did not stabilize" in rows[1]
    header_columns = perf_run.HEADER.count("|")
    assert all(row.count("|") == header_columns for row in rows)


def test_the_ceilings_flop_count_is_torchs() -> None:
    """The FLOPs per token the ceiling divides by equal what torch's own counter counts in a real encoder's
    forward pass (its matmuls: Linear layers and attention), for a text of the length assumed."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import XLMRobertaConfig, XLMRobertaModel

    shape = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2}
    tokens = 32
    config = XLMRobertaConfig(vocab_size=100, num_attention_heads=4, max_position_embeddings=64,
                              attn_implementation="eager", **shape)
    model = XLMRobertaModel(config, add_pooling_layer=False).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=torch.ones(1, tokens, dtype=torch.long))
    encoder_flops = counter.get_total_flops() / tokens
    heads = 2 * 64 * (8 + 1)  # ColBERT (colbert_dim 8 here) and sparse heads, which the encoder does not run
    assert ceiling.gflop_per_token(shape, text_tokens=tokens, colbert_dim=8) * 1e9 == pytest.approx(
        encoder_flops + heads, rel=0.02)


def test_the_ceiling_times_each_shape_and_the_int8_kernel() -> None:
    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    measured = ceiling.measure(tiny, "float32", 1, seconds=0.05)
    assert measured.gflops > 0 and set(measured.per_shape) == {"qkv+out", "ffn-up", "ffn-down"}
    quantized = ceiling.measure(tiny, "int8", 1, seconds=0.05)
    assert quantized.dtype == "int8 (dynamic, FFN output fp32)" and quantized.gflops > 0


def test_every_table_names_an_instruction_set_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a cap /proc/cpuinfo still lists AVX-512 and AMX: the header must say what torch was allowed."""
    for name in common.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert "capped" not in common.machine()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert common.machine().endswith("; capped by ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16")


def test_the_noise_floor_restores_the_threads_it_changed() -> None:
    threads = torch.get_num_threads()
    measured = noise.measure(2.0, 1, "float32", repeats=30)
    assert torch.get_num_threads() == threads and measured.threads == 1


def test_retrieval_agreement_sees_a_swap_in_the_top_ten_and_the_gate_rejects_it() -> None:
    """One query over 12 passages whose dense scores fall with their index: swapping passages 9 and 10's
    vectors moves one passage out of the top 10 (overlap 0.9, under the gate); swapping 0 and 1 moves none."""
    import numpy as np

    from perf import fidelity

    rng = np.random.default_rng(0)
    query = rng.normal(size=8)
    query /= np.linalg.norm(query)
    passages = []
    for index in range(12):  # cosine with the query 0.95, 0.90, ... : a known order
        other = rng.normal(size=8)
        other -= other @ query * query
        other /= np.linalg.norm(other)
        cosine = 0.95 - 0.05 * index
        passages.append(cosine * query + np.sqrt(1 - cosine ** 2) * other)
    colbert = [np.stack([query, query])]

    def side(order: list[int]) -> tuple[list[fidelity.Output], list[fidelity.Output]]:
        return ([(query, {1: 1.0}, colbert[0])],
                [(passages[i], {1: 1.0 / (1 + i)}, np.stack([passages[i]])) for i in order])

    reference = side(list(range(12)))
    outside = fidelity.retrieval(reference, side([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 9, 11]))
    assert outside["dense top-10"] == pytest.approx(0.9) and not fidelity.passes_gate(outside)
    inside = fidelity.retrieval(reference, side([1, 0, *range(2, 12)]))
    assert inside["dense top-10"] == 1.0 and inside["dense Spearman"] < 1.0
