"""Unit and property tests of the model core's pieces: sub-batcher, post-processing, tokenization."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bge_m3_triton.core.batching import _greedy, pad_batch, plan_sub_batches
from bge_m3_triton.core.postprocess import colbert_vectors, sparse_weights
from bge_m3_triton.core.tokens import load_tokenizer, tokenize
from bge_m3_triton.ops.testmodel import tokenizer_folder


@given(st.lists(st.integers(1, 600), max_size=80), st.integers(1, 4096), st.integers(1, 70))
def test_sub_batches_cover_every_text_once_within_budget(lengths: list[int], budget: int, rows: int) -> None:
    plan = plan_sub_batches(lengths, budget, rows)
    assert sorted(p for batch in plan for p in batch) == list(range(len(lengths)))
    for batch in plan:
        assert len(batch) <= rows
        longest = max(lengths[p] for p in batch)
        assert len(batch) == 1 or len(batch) * longest <= budget
    greedy = _greedy(sorted(range(len(lengths)), key=lambda i: -lengths[i]), lengths, budget, rows)
    assert len(plan) == len(greedy), "balancing must not add forward passes"

    def cost(batches: list[list[int]]) -> int:
        return max((len(b) * max(lengths[p] for p in b) for b in batches), default=0)

    assert cost(plan) <= cost(greedy)


def test_sub_batches_are_even() -> None:
    assert [len(b) for b in plan_sub_batches([256] * 17, 4096, 64)] == [9, 8]
    assert [len(b) for b in plan_sub_batches([17] * 64, 1024, 64)] == [32, 32]
    assert [len(b) for b in plan_sub_batches([256] * 16, 4096, 64)] == [16]


def test_pad_batch() -> None:
    ids, mask = pad_batch([[0, 5, 2], [0, 2]], pad_id=1)
    assert ids.tolist() == [[0, 5, 2], [0, 2, 1]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def naive_sparse(weights: np.ndarray, ids: np.ndarray, mask: np.ndarray, unused: set[int]) -> list[dict[int, float]]:
    """FlagEmbedding's per-token loop."""
    rows = []
    for w_row, id_row, m_row in zip(weights, ids, mask):
        result: dict[int, float] = {}
        for w, i, m in zip(w_row, id_row, m_row):
            if m and int(i) not in unused and w > 0 and w > result.get(int(i), 0):
                result[int(i)] = float(w)
        rows.append(result)
    return rows


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_sparse_weights_equal_the_per_token_loop(data: st.DataObject) -> None:
    rows, width = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 12))
    ids = np.array(data.draw(st.lists(st.lists(st.integers(0, 9), min_size=width, max_size=width),
                                      min_size=rows, max_size=rows)))
    weights = np.array(data.draw(st.lists(st.lists(st.floats(-1, 1, width=32), min_size=width, max_size=width),
                                          min_size=rows, max_size=rows)), dtype=np.float32)
    lengths = data.draw(st.lists(st.integers(0, width), min_size=rows, max_size=rows))
    mask = np.array([[1] * n + [0] * (width - n) for n in lengths])
    counts, out_ids, values = sparse_weights(torch.relu(torch.tensor(weights)), torch.tensor(ids),
                                             torch.tensor(mask), [0, 1, 2, 3], vocab_size=10)
    expected = naive_sparse(np.maximum(weights, 0), ids, mask, {0, 1, 2, 3})
    start = 0
    for row, count in enumerate(counts.tolist()):
        got = dict(zip(out_ids[start:start + count].tolist(), values[start:start + count].tolist()))
        assert list(got) == sorted(got) and got == pytest.approx(expected[row])
        start += count


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.integers(1, 8))
def test_colbert_vectors_one_per_token_after_cls(lengths: list[int], dim: int) -> None:
    width = max(lengths)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    projected = torch.randn(len(lengths), width - 1, dim) + 0.1
    counts, vectors = colbert_vectors(projected, mask)
    assert counts.tolist() == [n - 1 for n in lengths]
    assert vectors.shape == (sum(lengths) - len(lengths), dim)
    np.testing.assert_allclose(vectors.norm(dim=-1).numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_colbert_vectors_are_normalize_in_float32_and_leave_the_input(dtype: torch.dtype) -> None:
    """The in-place division gives torch's `normalize` values exactly, in float32 from any input dtype,
    and never writes into the head's output (for fp32 the masked copy is the only copy)."""
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    projected = torch.randn(2, 4, 8).to(dtype)
    before = projected.clone()
    counts, vectors = colbert_vectors(projected, mask)
    expected = torch.nn.functional.normalize(projected.float()[mask[:, 1:].bool()], dim=-1)
    assert vectors.dtype == torch.float32 and counts.tolist() == [3, 1]
    assert torch.equal(vectors, expected)
    assert torch.equal(projected, before)


@functools.lru_cache(maxsize=1)
def xlmr() -> Any:
    return load_tokenizer(tokenizer_folder())


def test_real_tokenizer_ids() -> None:
    assert tokenize(xlmr(), ["Hello world, 你好世界"], [512]).ids[0] == [0, 35378, 8999, 4, 6, 124084, 3221, 2]


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=200), st.integers(2, 40))
def test_truncation_equals_the_tokenizers_and_flags_it(text: str, limit: int) -> None:
    tokenizer = xlmr()
    ours = tokenize(tokenizer, [text], [limit])
    direct = tokenizer([text], truncation=True, max_length=limit)["input_ids"][0]
    full = tokenizer([text])["input_ids"][0]
    assert ours.ids[0] == direct
    assert ours.truncated[0] == (len(full) > limit)


def test_auto_dtype_asks_the_runtime_not_only_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ONEDNN_MAX_CPU_ISA=AVX2` leaves avx512_bf16 in /proc/cpuinfo but bf16 emulated: auto must stay fp32."""
    import torch

    from bge_m3_triton.core import devices

    flags = "flags\t\t: fpu avx2 avx512f avx512_bf16\n"
    monkeypatch.setattr(devices, "runtime_bf16_supported", lambda: False)
    assert not devices.cpu_has_fast_bf16(flags)
    monkeypatch.setattr(devices, "runtime_bf16_supported", lambda: True)
    assert devices.cpu_has_fast_bf16(flags)
    assert not devices.cpu_has_fast_bf16("flags\t\t: fpu avx2\n")  # runtime support without native bf16
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda cpuinfo=None: False)
    assert devices.resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_auto_dtype_takes_bf16_only_where_it_multiplies_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Native bf16 that multiplies slower than fp32 (a Sapphire Rapids without AMX enabled: ~0.7x) stays fp32,
    through the whole path a tool takes (`resolve_dtype`: the machine's facts, then the plan)."""
    import torch

    from bge_m3_triton.core import devices

    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda cpuinfo=None: True)
    for speedup, expected in ((0.7, torch.float32), (1.2, torch.float32), (2.0, torch.bfloat16),
                              (7.0, torch.bfloat16)):
        monkeypatch.setattr(devices, "_bf16_speedup", lambda threads, s=speedup: (s, (300.0, 300.0 * s)))
        assert devices.resolve_dtype("auto", torch.device("cpu")) == expected, speedup
        assert devices.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16  # asked for: no probe


def test_runtime_bf16_check_follows_the_isa_cap() -> None:
    """Under the AVX2 cap torch itself reports no native bf16 (a fresh process reads the variable)."""
    import os
    import subprocess
    import sys

    code = "from bge_m3_triton.core.devices import runtime_bf16_supported as r; print(r())"
    capped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert capped.stdout.strip() == "False"


def test_the_plans_token_budget_is_what_the_model_runs_with(m3_checkpoint: Path) -> None:
    """The budget the runtime plan picks (its decision table: tests/test_plan.py) is the one loading carries out."""
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings

    model = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="float32", device="cpu", compile="off"))
    assert model.settings.max_batch_tokens == 1024
    quantized = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="int8", device="cpu", engine="torch"))
    assert quantized.settings.max_batch_tokens == 1024


ALLOCATION_PROBE = """
import ctypes, resource, sys, torch
from bge_m3_triton.core import allocator
# Count 4 KiB pages: with transparent huge pages a fresh 16 MB mapping may fault in 2 MiB at a time,
# which would hide what the test measures (PR_SET_THP_DISABLE, Linux 3.15+).
ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0)
if sys.argv[1] == "kept":
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def layer(rows):  # three ~16 MB activations alive at once, then freed, as a feed-forward block's are
    up = torch.ones(rows, 4096, dtype=torch.bfloat16)
    act = up * 2
    out = act + 1
    del up, act, out
# Each pass a little longer than the last (64 KB more per buffer), as batches of texts are: glibc's
# default mmap threshold only rises to the largest block freed so far, so every pass maps fresh pages.
for step in range(6):
    layer(2048 + 8 * step)
before = faults()
for step in range(6, 11):
    layer(2048 + 8 * step)
print((faults() - before) // 5)
"""


def test_kept_heap_stops_page_faulting_a_forward_pass_sized_buffer() -> None:
    """With glibc's defaults a pass's ~16 MB activations come from fresh mappings, faulted in page by
    page (three buffers: ~12,300 faults per pass); with the thresholds the server sets, the heap's freed
    blocks are reused (bge_m3_triton.core.allocator)."""
    import subprocess
    import sys

    def faults_per_pass(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", ALLOCATION_PROBE, mode], capture_output=True, text=True,
                              check=True)
        return int(done.stdout.strip())

    default, kept = faults_per_pass("default"), faults_per_pass("kept")
    assert default > 8000 and kept * 10 < default, (default, kept)


def test_gpu_facts_come_from_the_instances_own_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compute capability the plan decides by is the instance's device's (not the current device's)."""
    from bge_m3_triton.core import devices
    from bge_m3_triton.core.plan import MachineFacts
    from bge_m3_triton.core.settings import ModelSettings

    asked: list[torch.device] = []

    def capability(device: torch.device) -> tuple[int, int]:
        asked.append(device)
        return {0: (7, 5), 1: (9, 0)}[device.index]

    monkeypatch.setattr(devices, "resolve_device", lambda name: torch.device(name))
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    facts = [MachineFacts.gather(ModelSettings(model="/m"), device) for device in ("cuda:0", "cuda:1")]
    assert [f.gpu_capability for f in facts] == [(7, 5), (9, 0)]
    assert asked == [torch.device("cuda:0"), torch.device("cuda:1")]
