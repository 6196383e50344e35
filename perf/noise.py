"""The machine's own latency tail: a fixed amount of matmul work, as long as a lone query's forward pass,
timed hundreds of times. Its p99 / p50 is what this machine does to a short request before any serving.

    .venv/bin/python perf/noise.py [--ms 14] [--dtype bfloat16] [--repeats 600]

Why: on a shared 2-core VM one vCPU is now and then slower for a stretch (the host's doing), and a
parallel region on two threads waits for the slower one. On a Sapphire Rapids-class Xeon VM on
2026-12-06, 12-14 ms of bf16 Linear layers repeated 600 times gave p99 / p50 of 1.8-2.2 on two threads,
the slow repeats in runs, with no other process busy (README: Performance). `perf/latency.py` prints it
beside its served tails: a served p99 / p50 near the machine's own is the machine's; above it, ours.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable

from perf.common import machine, parser

ROWS, HIDDEN, FFN = 256, 1024, 4096  # an FFN-up Linear of the encoder on a 256-token batch


@dataclasses.dataclass(frozen=True)
class Noise:
    """Latencies of one fixed piece of work: median and 99th percentile, ms, and how the work was set."""

    threads: int
    layers: int
    p50: float
    p99: float
    slow: int  # repeats over 1.5x the median

    def line(self) -> str:
        plural = "s" if self.threads > 1 else ""
        return (f"{self.threads} thread{plural} ({self.layers} layers): p50 {self.p50:.1f} ms, "
                f"p99 {self.p99:.1f} ms (**{self.p99 / self.p50:.2f}x**), {self.slow} repeats over 1.5x the median")


def _timed_ms(run: Callable[[], None], repeats: int) -> list[float]:
    """Wall time of each of `repeats` calls of `run`, ms."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return times


def fixed_work(target_ms: float, dtype_name: str) -> tuple[Callable[[], None], int]:
    """A function running as many Linear layers as take about `target_ms` at the current thread count."""
    import torch

    dtype = getattr(torch, dtype_name)
    inputs, weight = torch.randn(ROWS, HIDDEN).to(dtype), torch.randn(FFN, HIDDEN).to(dtype)

    def layer() -> None:
        with torch.inference_mode():
            torch.nn.functional.linear(inputs, weight)

    # the median of single runs: a slow stretch during calibration does not set the length
    layers = max(1, round(target_ms / statistics.median(_timed_ms(layer, 25)[5:])))

    def run() -> None:
        for _ in range(layers):
            layer()

    return run, layers


def measure(target_ms: float, threads: int, dtype_name: str = "float32", repeats: int = 600) -> Noise:
    """Time `repeats` runs of a fixed ~`target_ms` of work on `threads` torch threads (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run, layers = fixed_work(target_ms, dtype_name)
        times = _timed_ms(run, repeats)
    finally:
        torch.set_num_threads(before)
    p50 = statistics.median(times)
    return Noise(threads, layers, p50, statistics.quantiles(times, n=100)[98], sum(t > 1.5 * p50 for t in times))


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--ms", type=float, default=14.0)
    options.add_argument("--dtype", default="bfloat16")
    options.add_argument("--repeats", type=int, default=600)
    args = options.parse_args()
    import torch

    print(f"Machine: {machine()}; {args.repeats} repeats of ~{args.ms:g} ms of {args.dtype} Linear layers "
          f"({ROWS} x {HIDDEN} -> {FFN})")
    for threads in sorted({1, torch.get_num_threads()}):
        print("- " + measure(args.ms, threads, args.dtype, args.repeats).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
