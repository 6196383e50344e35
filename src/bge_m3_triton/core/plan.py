"""The runtime plan: what one model instance runs with, decided once from its settings and the machine.

`plan(settings, facts)` is a pure function from the validated settings (`ModelSettings`) and the facts
of the machine (`MachineFacts`: the instance's device, its cores, what its CPU or GPU runs natively, a
C++ compiler, the bf16 probe) to a `RuntimePlan`: device, dtype, attention, compiling, threads, the
token budget, shared weights, the allocator. `MachineFacts.gather` asks torch and the machine, and
`core.loading` carries the plan out; the plan is logged with the reason for each choice, and its
decision table is a test (`tests/test_plan.py`). The figures behind each rule are in docs/decisions/.
"""

from __future__ import annotations

import dataclasses
import os

from bge_m3_triton.core.settings import ModelSettings

BF16_MIN_SPEEDUP = 1.25  # bf16 must multiply this much faster than fp32 for `auto` to take it (decision 004)
BF16_CAPABILITY = (8, 0)  # Ampere: the first GPUs whose tensor cores run bf16
CPU_BUDGETS = {"bfloat16": 2048, "float32": 1024, "float16": 1024, "int8": 1024}  # decision 007
GPU_BUDGET = 4096
# What `engine auto` runs on OpenVINO, on CPUs with native bf16 and no AMX (decision 012: measured faster there,
# bf16 within the fidelity gate; int8, asked for, faster and closer to fp32 than torch's dynamic int8).
OPENVINO_AUTO_DTYPES = frozenset({"bfloat16", "int8"})


@dataclasses.dataclass(frozen=True)
class MachineFacts:
    """What the plan needs to know about where the instance runs."""

    device: str  # the instance's device: "cpu" or "cuda:N"
    cores: int = 1  # CPUs this process may use
    computing_instances: int = 1  # instances that run forward passes at once on these cores
    native_bf16: bool = False  # CPU: oneDNN runs bf16 matmuls on native kernels (AVX512-BF16 or AMX)
    amx: bool = False  # CPU: oneDNN may run them on AMX tiles
    cxx: bool = False  # a C++ compiler for inductor is on PATH (or in $CXX)
    bf16_speedup: float | None = None  # CPU: bf16's matmul rate over fp32's, measured (None: not measured)
    gpu_capability: tuple[int, int] | None = None  # GPU: the device's compute capability
    openvino: bool = False  # OpenVINO can be imported here

    @classmethod
    def gather(cls, settings: ModelSettings, device: str, computing_instances: int = 1) -> MachineFacts:
        """Ask torch and the machine. The bf16 probe (~50 ms) runs only where `dtype auto` needs it, on the
        threads the plan will give the instance."""
        import torch

        from bge_m3_triton.core import compiling, devices

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if device.startswith("cuda"):
            index = devices.resolve_device(device)
            return cls(device=str(index), cores=cores, computing_instances=computing_instances,
                       gpu_capability=tuple(torch.cuda.get_device_capability(index)))  # type: ignore[arg-type]
        from bge_m3_triton.core import openvino_engine

        native = devices.cpu_has_fast_bf16()
        facts = cls(device="cpu", cores=cores, computing_instances=computing_instances, native_bf16=native,
                    amx=native and devices.cpu_uses_amx(), cxx=compiling.cpp_compiler() is not None,
                    openvino=openvino_engine.available())
        if settings.dtype == "auto" and native:
            threads = torch.get_num_threads()
            torch.set_num_threads(cpu_threads(settings, facts))  # the probe runs on the instance's threads
            try:
                speedup = devices.bf16_speedup()
            finally:
                torch.set_num_threads(threads)
            facts = dataclasses.replace(facts, bf16_speedup=speedup)
        return facts


@dataclasses.dataclass(frozen=True)
class RuntimePlan:
    """What an instance runs with, and why."""

    device: str  # "cpu" or "cuda:N"
    dtype: str  # "float32", "bfloat16", "float16" or "int8" (torch: dynamic int8 Linear layers; OpenVINO: static)
    attention: str  # "sdpa" or "onednn-graph" (torch); "openvino": the engine's own
    engine: str  # "torch" or "openvino"
    compile: bool  # torch.compile with inductor at load
    threads: int  # torch's intra-op threads; 0: leave torch's default (GPUs)
    max_batch_tokens: int  # padded tokens of one sub-batch at most
    share_weights: bool  # map one copy of the converted weights with the other instances
    keep_freed_memory: bool  # tell glibc to keep freed memory between forward passes
    why: tuple[str, ...] = ()

    @property
    def is_cpu(self) -> bool:
        return self.device == "cpu"

    def describe(self) -> str:
        """One line for the server log."""
        choices = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self) if f.name != "why")
        return f"{choices} ({'; '.join(self.why)})"


class PlanError(ValueError):
    """The settings ask for something this machine cannot run; the message says what."""


def cpu_threads(settings: ModelSettings, facts: MachineFacts) -> int:
    """The intra-op threads of a CPU instance: as set, or the cores divided by the instances computing at once."""
    return settings.torch_threads or max(1, facts.cores // max(1, facts.computing_instances))


def plan(settings: ModelSettings, facts: MachineFacts) -> RuntimePlan:
    """The runtime plan for `settings` on a machine with `facts` (pure: no I/O, no torch)."""
    why: list[str] = []
    cpu = facts.device == "cpu"
    dtype = _dtype(settings, facts, why)
    engine = _engine(settings, facts, dtype, why)
    openvino = engine == "openvino"
    compile_it = not openvino and _compile(settings, facts, dtype, why)
    attention = "openvino" if openvino else _attention(settings, facts, dtype, compile_it, why)
    budget = settings.max_batch_tokens or (CPU_BUDGETS[dtype] if cpu else GPU_BUDGET)
    if not settings.max_batch_tokens:
        why.append(f"{budget}-token sub-batches for {dtype} on {'CPU' if cpu else 'GPU'}")
    share = cpu and settings.share_weights == "on" and dtype != "int8" and not openvino
    if cpu and settings.share_weights == "on" and dtype == "int8" and not openvino:
        why.append("int8 weights are not shared (quantized per instance)")
    return RuntimePlan(device=facts.device, dtype=dtype, attention=attention, engine=engine, compile=compile_it,
                       threads=cpu_threads(settings, facts) if cpu else settings.torch_threads,
                       max_batch_tokens=budget, share_weights=share, keep_freed_memory=cpu, why=tuple(why))


def _engine(settings: ModelSettings, facts: MachineFacts, dtype: str, why: list[str]) -> str:
    if facts.device != "cpu" and settings.engine == "openvino":
        why.append("torch: the OpenVINO engine runs on CPU; GPUs run torch")
    if facts.device != "cpu" or settings.engine == "torch":
        return "torch"
    if settings.engine == "openvino":
        if not facts.openvino:
            raise PlanError("engine openvino: the openvino package is not installed here")
        if dtype == "float16":
            raise PlanError("engine openvino runs float32, bfloat16 or int8 on CPU, not float16")
        return "openvino"
    if facts.openvino and dtype in OPENVINO_AUTO_DTYPES and facts.native_bf16 and not facts.amx:
        why.append(f"openvino: {dtype} on a CPU with native bf16 and no AMX (decision 012)")
        return "openvino"
    if facts.openvino:
        where = "with AMX" if facts.amx else "with native bf16" if facts.native_bf16 else "without native bf16"
        why.append(f"torch: OpenVINO not measured faster for {dtype} on a CPU {where} (decision 012)")
    return "torch"


def _dtype(settings: ModelSettings, facts: MachineFacts, why: list[str]) -> str:
    cpu = facts.device == "cpu"
    if settings.dtype == "int8" and not cpu:
        raise PlanError("dtype int8 (dynamic int8 Linear layers) runs on CPU only; use bfloat16 or float16 on GPUs")
    if settings.dtype != "auto":
        return settings.dtype
    if not cpu:
        capability = facts.gpu_capability or (0, 0)
        chosen = "bfloat16" if capability >= BF16_CAPABILITY else "float16"
        why.append(f"{chosen}: compute capability {capability[0]}.{capability[1]}")
        return chosen
    if not facts.native_bf16:
        why.append("float32: no native bf16 on this CPU")
        return "float32"
    speedup = facts.bf16_speedup or 0.0
    if speedup < BF16_MIN_SPEEDUP:
        why.append(f"float32: bf16 multiplies at {speedup:.2f}x fp32 here")
        return "float32"
    why.append(f"bfloat16: {speedup:.1f}x fp32's matmul rate")
    return "bfloat16"


def _compile(settings: ModelSettings, facts: MachineFacts, dtype: str, why: list[str]) -> bool:
    cpu = facts.device == "cpu"
    if settings.compile == "off":
        return False
    if settings.compile == "inductor":
        if not cpu or dtype == "int8":
            why.append("not compiled: inductor runs on CPU with float32, bfloat16 or float16 weights only")
            return False
        return True
    if not (cpu and dtype == "bfloat16" and facts.amx):
        return False
    if not facts.cxx:
        why.append("not compiled: no C++ compiler (g++) on PATH; with one, bf16 on AMX runs 1.1-1.2x faster")
        return False
    why.append("compiled: bf16 on AMX")
    return True


def _attention(settings: ModelSettings, facts: MachineFacts, dtype: str, compile_it: bool, why: list[str]) -> str:
    if facts.device != "cpu" or settings.attention == "sdpa":
        return "sdpa"
    fused = settings.attention == "onednn-graph" or (dtype == "bfloat16" and not facts.amx)
    if fused and compile_it:
        why.append("sdpa: TorchScript's fused attention does not run inside an inductor graph")
        return "sdpa"
    return "onednn-graph" if fused else "sdpa"
