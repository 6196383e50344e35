"""The model core with glibc's default malloc against the kept-heap thresholds the server sets
(`bge_m3_triton.core.allocator`): time per forward pass, page faults per pass, system CPU time.

    .venv/bin/python perf/allocator.py [--preset small] [--rounds 4] [--passes 12]

Each round runs both settings in fresh processes, one after the other (this VM's speed drifts within
minutes); a pass is one `encode` of 8 passages of ~256 tokens, all three outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import benchmark_checkpoint, machine, parser, publish  # noqa: E402
from corpus import make_texts  # noqa: E402

SETTINGS = ("default malloc", "kept heap")


def child(preset: str, kept: bool, passes: int) -> dict[str, float]:
    """Time `passes` forward passes in this process; glibc's defaults stay when not `kept`."""
    from bge_m3_triton.core import allocator
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings

    if not kept:
        allocator.keep_freed_memory = lambda: False  # type: ignore[assignment]
    model = M3Model.load(ModelSettings(model=str(benchmark_checkpoint(preset)), dtype="auto", device="cpu"))
    tokenized = model.tokenize(make_texts(model.tokenizer, 8, 256, seed=2), [8192] * 8)
    model.encode_tokenized(tokenized)  # warm-up
    before, start, times = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), []
    for _ in range(passes):
        begin = time.perf_counter()
        model.encode_tokenized(tokenized)
        times.append(time.perf_counter() - begin)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    return {"ms": statistics.median(times) * 1000, "faults": (after.ru_minflt - before.ru_minflt) / passes,
            "sys": (after.ru_stime - before.ru_stime) / wall, "peak_mb": after.ru_maxrss / 1024}


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--rounds", type=int, default=4)
    options.add_argument("--passes", type=int, default=12)
    options.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.child:
        print(json.dumps(child(args.preset, args.child == "on", args.passes)))
        return 0
    benchmark_checkpoint(args.preset)
    rounds: list[dict[str, dict[str, float]]] = []
    for number in range(args.rounds):
        row = {}
        for name, flag in zip(SETTINGS, ("off", "on")):
            done = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--passes", str(args.passes),
                                   "--child", flag], capture_output=True, text=True, check=True, env=os.environ)
            row[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"[allocator] round {number + 1}: {row}", flush=True)
        rounds.append(row)
    lines = [f"# glibc malloc thresholds, model core {args.preset}",
             "", f"Machine: {machine()}; dtype auto; {args.passes} passes of 8 passages (~256 tokens) per process, "
             f"{args.rounds} rounds, both settings in each. Median ms per pass; minor page faults per pass; "
             "system CPU time per wall second (of 2 cores' worth); the process's peak resident memory, MB.", "",
             "| round | " + " | ".join(f"{name}: ms, faults, sys, peak MB" for name in SETTINGS)
             + " | kept / default |",
             "|---|---|---|---|"]
    for number, row in enumerate(rounds, 1):
        cells = [f"{row[n]['ms']:.0f}, {row[n]['faults']:,.0f}, {row[n]['sys']:.2f}, {row[n]['peak_mb']:,.0f}"
                 for n in SETTINGS]
        ratio = row[SETTINGS[1]]["ms"] / row[SETTINGS[0]]["ms"]
        lines.append(f"| {number} | " + " | ".join(cells) + f" | {ratio:.3f} |")
    ratios = [row[SETTINGS[1]]["ms"] / row[SETTINGS[0]]["ms"] for row in rounds]
    medians = [statistics.median(row[n]["ms"] for row in rounds) for n in SETTINGS]
    lines.append(f"| median | {medians[0]:.0f} | {medians[1]:.0f} | {statistics.median(ratios):.3f} |")
    publish("\n".join(lines), args.out, f"allocator-{args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
