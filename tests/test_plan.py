"""The runtime plan's decision table (core/plan.py): settings and machine facts in, what an instance runs with
out. The figures behind each rule are in docs/decisions/ (004 dtype, 003 compiling, 005 attention, 007 budget,
012 engine)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bge_m3_triton.core.plan import MachineFacts, PlanError, RuntimePlan, cpu_threads, plan
from bge_m3_triton.core.settings import ModelSettings

ZEN4 = MachineFacts("cpu", cores=2, native_bf16=True, amx=False, cxx=True, bf16_speedup=2.0)
XEON_AMX = MachineFacts("cpu", cores=2, native_bf16=True, amx=True, cxx=True, bf16_speedup=7.0)
XEON_AMX_OFF = MachineFacts("cpu", cores=2, native_bf16=True, amx=False, cxx=True, bf16_speedup=0.7)
ZEN3 = MachineFacts("cpu", cores=2, native_bf16=False, cxx=True)
ZEN4_OV = dataclasses.replace(ZEN4, openvino=True)
AMX_NO_CXX = dataclasses.replace(XEON_AMX, cxx=False)
A100 = MachineFacts("cuda:0", cores=16, gpu_capability=(8, 0))
H100 = MachineFacts("cuda:1", cores=16, gpu_capability=(9, 0))
T4 = MachineFacts("cuda:0", cores=8, gpu_capability=(7, 5))
V100 = MachineFacts("cuda:0", cores=8, gpu_capability=(7, 0))


def settings(**values: Any) -> ModelSettings:
    return ModelSettings(model="/m", **values)


# (machine, settings) -> (dtype, attention, compile, max_batch_tokens, share_weights)
TABLE = [
    # dtype auto on CPUs: bf16 where native and at least 1.25x fp32 (004)
    (ZEN4, {}, ("bfloat16", "onednn-graph", False, 2048, True)),
    (XEON_AMX, {}, ("bfloat16", "sdpa", True, 2048, True)),
    (XEON_AMX_OFF, {}, ("float32", "sdpa", False, 1024, True)),
    (ZEN3, {}, ("float32", "sdpa", False, 1024, True)),
    (dataclasses.replace(ZEN4, bf16_speedup=1.2), {}, ("float32", "sdpa", False, 1024, True)),
    (AMX_NO_CXX, {}, ("bfloat16", "sdpa", False, 2048, True)),  # AMX but no compiler: eager (003)
    # asked for explicitly: no probe decides
    (XEON_AMX_OFF, {"dtype": "bfloat16"}, ("bfloat16", "onednn-graph", False, 2048, True)),
    (ZEN3, {"dtype": "int8"}, ("int8", "sdpa", False, 1024, False)),  # int8 weights are never shared
    (ZEN4, {"dtype": "float32", "attention": "onednn-graph"}, ("float32", "onednn-graph", False, 1024, True)),
    (ZEN4, {"attention": "sdpa"}, ("bfloat16", "sdpa", False, 2048, True)),
    (ZEN4, {"compile": "inductor"}, ("bfloat16", "sdpa", True, 2048, True)),  # no TorchScript inside inductor
    (ZEN4, {"compile": "inductor", "dtype": "int8"}, ("int8", "sdpa", False, 1024, False)),
    (XEON_AMX, {"compile": "off"}, ("bfloat16", "sdpa", False, 2048, True)),
    (ZEN4, {"max_batch_tokens": 512, "share_weights": "off"}, ("bfloat16", "onednn-graph", False, 512, False)),
    # GPUs: bf16 from compute capability 8.0, fp16 below; never compiled, SDPA, 4,096 tokens, no sharing
    (A100, {}, ("bfloat16", "sdpa", False, 4096, False)),
    (H100, {}, ("bfloat16", "sdpa", False, 4096, False)),
    (T4, {}, ("float16", "sdpa", False, 4096, False)),
    (V100, {}, ("float16", "sdpa", False, 4096, False)),
    (T4, {"compile": "inductor", "attention": "onednn-graph"}, ("float16", "sdpa", False, 4096, False)),
    # engine openvino (012): its own attention, never compiled by torch, its IR mapped rather than shared weights
    (ZEN4_OV, {"engine": "openvino"}, ("bfloat16", "openvino", False, 2048, False)),
    (ZEN4_OV, {"engine": "openvino", "dtype": "int8"}, ("int8", "openvino", False, 1024, False)),
    (ZEN4_OV, {"engine": "openvino", "compile": "inductor"}, ("bfloat16", "openvino", False, 2048, False)),
    (dataclasses.replace(ZEN3, openvino=True), {"engine": "openvino"}, ("float32", "openvino", False, 1024, False)),
    (ZEN4_OV, {"engine": "torch"}, ("bfloat16", "onednn-graph", False, 2048, True)),
    # engine auto with openvino installed: OpenVINO for bf16 and int8 where native bf16 runs without AMX (012)
    (ZEN4_OV, {}, ("bfloat16", "openvino", False, 2048, False)),
    (ZEN4_OV, {"dtype": "int8"}, ("int8", "openvino", False, 1024, False)),
    (ZEN4_OV, {"dtype": "float32"}, ("float32", "sdpa", False, 1024, True)),  # fp32: not measured, torch
    (dataclasses.replace(XEON_AMX, openvino=True), {}, ("bfloat16", "sdpa", True, 2048, True)),
    (dataclasses.replace(ZEN3, openvino=True), {"dtype": "int8"}, ("int8", "sdpa", False, 1024, False)),
    (dataclasses.replace(A100, openvino=True), {"engine": "openvino"}, ("bfloat16", "sdpa", False, 4096, False)),
]


@pytest.mark.parametrize(("facts", "values", "expected"), TABLE)
def test_the_decision_table(facts: MachineFacts, values: dict[str, Any], expected: tuple[Any, ...]) -> None:
    runtime_plan = plan(settings(**values), facts)
    got = (runtime_plan.dtype, runtime_plan.attention, runtime_plan.compile, runtime_plan.max_batch_tokens,
           runtime_plan.share_weights)
    assert got == expected
    assert runtime_plan.device == facts.device and runtime_plan.keep_freed_memory == (facts.device == "cpu")


def test_every_choice_says_why() -> None:
    assert "0.70x fp32" in plan(settings(), XEON_AMX_OFF).describe()
    assert "no C++ compiler" in plan(settings(), AMX_NO_CXX).describe()
    assert "compute capability 7.5" in plan(settings(), T4).describe()


@pytest.mark.parametrize(("cores", "computing", "requested", "threads"), [
    (2, 1, 0, 2),    # one instance computes at a time: all the cores
    (8, 2, 0, 4),    # two at once: the cores split between them
    (2, 4, 0, 1),    # never below one
    (8, 2, 3, 3),    # set explicitly: kept
])
def test_cpu_threads_follow_the_instances_computing_at_once(cores: int, computing: int, requested: int,
                                                            threads: int) -> None:
    facts = dataclasses.replace(ZEN4, cores=cores, computing_instances=computing)
    assert cpu_threads(settings(torch_threads=requested), facts) == threads
    assert plan(settings(torch_threads=requested), facts).threads == threads
    assert plan(settings(torch_threads=requested), A100).threads == requested  # GPUs: torch's default unless set


def test_the_engine_is_recorded_and_says_why() -> None:
    assert plan(settings(engine="openvino"), ZEN4_OV).engine == "openvino"
    assert plan(settings(), ZEN4_OV).engine == "openvino"
    assert "native bf16 and no AMX (decision 012)" in plan(settings(), ZEN4_OV).describe()
    assert plan(settings(), ZEN4).engine == "torch"  # openvino not installed
    on_amx = plan(settings(), dataclasses.replace(XEON_AMX, openvino=True))
    assert on_amx.engine == "torch" and "not measured faster for bfloat16 on a CPU with AMX" in on_amx.describe()
    on_gpu = plan(settings(engine="openvino"), dataclasses.replace(A100, openvino=True))
    assert on_gpu.engine == "torch" and "GPUs run torch" in on_gpu.describe()


@pytest.mark.parametrize(("facts", "values", "message"), [
    (ZEN4, {"engine": "openvino"}, "openvino package is not installed"),
    (ZEN4_OV, {"engine": "openvino", "dtype": "float16"}, "not float16"),
])
def test_an_engine_this_machine_cannot_run_is_refused(facts: MachineFacts, values: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan(settings(**values), facts)


def test_int8_on_a_gpu_is_refused_with_the_reason() -> None:
    with pytest.raises(PlanError, match="runs on CPU only"):
        plan(settings(dtype="int8"), A100)


def test_the_plan_is_pure() -> None:
    """Same inputs, same plan; nothing about the machine is read while planning."""
    assert plan(settings(), ZEN4) == plan(settings(), ZEN4)
    assert isinstance(plan(settings(), ZEN4), RuntimePlan)


def test_gathering_asks_this_machine_and_probes_only_for_dtype_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    from bge_m3_triton.core import devices

    probed: list[int] = []
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda cpuinfo=None: True)
    monkeypatch.setattr(devices, "bf16_speedup", lambda: probed.append(1) or 1.5)
    auto = MachineFacts.gather(settings(), "cpu", computing_instances=1)
    assert auto.native_bf16 and auto.bf16_speedup == 1.5 and probed == [1] and auto.cores >= 1
    fixed = MachineFacts.gather(settings(dtype="float32"), "cpu")
    assert fixed.bf16_speedup is None and probed == [1]
