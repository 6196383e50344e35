"""This machine's limit for the model: the matmul rate torch reaches at the encoder's own shapes, in the
dtype the server runs, and the work one token costs. Every perf table divides by it, so "how close to
this machine's limit are we" has one answer on any CPU.

    .venv/bin/python perf/ceiling.py --preset small [--dtype auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from perf.common import benchmark_checkpoint, machine

ROWS = (1024, 2048, 4096)  # rows of one sub-batch: the padded-token budgets the server runs; the best counts


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """The measured matmul rate (GFLOP/s) and the model's cost per token (GFLOP)."""

    dtype: str
    threads: int
    gflops: float
    gflop_per_token: float
    per_shape: dict[str, float]

    def tokens_per_s(self) -> float:
        """Tokens/s if every FLOP ran at the matmul ceiling."""
        return self.gflops / self.gflop_per_token

    def share(self, tokens_per_s: float) -> float:
        """The fraction of the ceiling a measured tokens/s reaches."""
        return tokens_per_s * self.gflop_per_token / self.gflops

    def line(self) -> str:
        shapes = ", ".join(f"{name} {rate:,.0f}" for name, rate in self.per_shape.items())
        rows = " / ".join(f"{r:,}" for r in ROWS)
        return (f"Ceiling: torch {self.dtype} matmul at the encoder's shapes (best of {rows} rows, "
                f"{self.threads} threads) "
                f"{self.gflops:,.0f} GFLOP/s ({shapes}); the model costs {self.gflop_per_token * 1000:.2f} MFLOP "
                f"per token (at 256-token texts), so the ceiling is {self.tokens_per_s():,.0f} tokens/s.")


def model_shapes(config: dict[str, int]) -> dict[str, tuple[int, int, int]]:
    """(in, out, how many per layer) of the encoder's linear layers."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    return {"qkv+out": (hidden, hidden, 4), "ffn-up": (hidden, inner, 1), "ffn-down": (inner, hidden, 1)}


def gflop_per_token(config: dict[str, int], text_tokens: int = 256, colbert_dim: int = 1024) -> float:
    """Forward FLOPs of one token: the linear layers, attention over a `text_tokens`-long text, the heads."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    linear = sum(2 * i * o * n for i, o, n in model_shapes(config).values())
    attention = 2 * 2 * text_tokens * hidden  # QK^T and AV
    heads = 2 * hidden * (colbert_dim + 1)
    return (layers * (linear + attention) + heads) / 1e9


def measure(config: dict[str, int], dtype_name: str, threads: int, seconds: float = 1.5, passes: int = 3) -> Ceiling:
    """Time torch's linear at each shape; the ceiling is their FLOP-weighted harmonic mean.

    The shapes take turns over `passes` passes at each row count of `ROWS`. A shape's rate is the median
    over the passes, so one slow spell of this shared VM does not set the limit (a single pass once read
    277 GFLOP/s where the same shapes ran at 370-390 minutes later), at its fastest row count: the
    server's sub-batch budget is ours to choose."""
    import torch

    from bge_m3_triton.core.allocator import keep_freed_memory
    from bge_m3_triton.core.devices import configure_threads, quantize_int8, resolve_dtype

    configure_threads(threads)
    dtype = resolve_dtype(dtype_name, torch.device("cpu"))  # as the server: `auto` times both on these threads
    keep_freed_memory()  # as the server runs: outputs reuse freed memory instead of faulting it in
    measured: dict[tuple[str, int], list[float]] = {}
    flops = {}
    with torch.inference_mode():
        layers = {}
        for name, (fan_in, fan_out, count) in model_shapes(config).items():
            layer = torch.nn.Linear(fan_in, fan_out, bias=False).to(dtype).eval()
            # The quantized kernel the int8 model runs, not an fp32 matmul; its FFN output stays fp32.
            if dtype_name == "int8" and name != "ffn-down":
                layer = quantize_int8(torch.nn.Sequential(layer))[0]
            layers[name] = layer
            flops[name] = 2 * fan_in * fan_out * count
        for _ in range(passes):
            for rows in ROWS:
                for name, (fan_in, fan_out, _count) in model_shapes(config).items():
                    x = torch.randn(rows, fan_in).to(dtype)
                    layers[name](x)  # warm-up (oneDNN picks its kernel for this shape)
                    times = []
                    deadline = time.perf_counter() + seconds / passes / len(ROWS)
                    while time.perf_counter() < deadline or len(times) < 3:
                        start = time.perf_counter()
                        layers[name](x)
                        times.append(time.perf_counter() - start)
                    rate = 2 * rows * fan_in * fan_out / statistics.median(times) / 1e9
                    measured.setdefault((name, rows), []).append(rate)
    rates = {name: max(statistics.median(measured[name, rows]) for rows in ROWS) for name in flops}
    total = sum(flops.values())
    combined = total / sum(flops[name] / rates[name] for name in rates)
    name = "int8 (dynamic, FFN output fp32)" if dtype_name == "int8" else str(dtype).removeprefix("torch.")
    return Ceiling(name, threads, combined, gflop_per_token(config), rates)


def for_checkpoint(checkpoint: Path, dtype: str, threads: int) -> Ceiling:
    config = json.loads((checkpoint / "config.json").read_text())
    return measure(config, dtype, threads)


def main() -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "small", "full"), default="small")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    print(for_checkpoint(benchmark_checkpoint(args.preset), args.dtype, args.threads).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
