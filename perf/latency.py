"""Tail latency of single short queries, one Triton instance against two (perf_analyzer, gRPC and HTTP).

    .venv/bin/python perf/latency.py [--preset small] [--window-ms 20000]

Shows Triton's dynamic-batcher stall and what avoids it: with one model instance, a request that
arrives while the instance is still releasing its previous batch finds no free slot, so `Enqueue`
does not wake the batcher, which had already gone back to its 500 ms idle wait
(`default_wait_microseconds` in Triton's dynamic_batch_scheduler.cc); the request waits out that
timeout. With two instances a slot is always free and the batcher is woken at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import benchmark_checkpoint, embed_server, machine, parser, publish, work_folder  # noqa: E402
from run import perf_analyzer_env, run_perf_analyzer, workloads  # noqa: E402


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--window-ms", type=int, default=20000)
    args = options.parse_args()

    from bge_m3_triton.core.tokens import load_tokenizer

    checkpoint = benchmark_checkpoint(args.preset)
    work = work_folder("latency")
    queries = workloads(load_tokenizer(checkpoint), work, quick=True)[0]
    lines = []
    for label, extra in (("1 instance, all cores", []), ("2 instances, half the cores each", ["--instances", "2"])):
        server = embed_server(checkpoint, work, *extra)
        try:
            for protocol in ("grpc", "http"):
                workload = dataclasses.replace(queries, concurrency=[1, 8], protocols=(protocol,))
                url = server.grpc if protocol == "grpc" else server.http
                for row in run_perf_analyzer(workload, protocol, url, work / f"{protocol}.csv", args.window_ms,
                                             perf_analyzer_env()):
                    if "error" in row:
                        lines.append(f"| {label} | {protocol} | {row['Concurrency']} | {row['error']} | | | | |")
                        continue
                    ms = {key: float(row[key]) / 1000 for key in ("p50 latency", "p99 latency", "Server Queue")}
                    lines.append(f"| {label} | {protocol} | {row['Concurrency']} | "
                                 f"{float(row['Inferences/Second']):.1f} | {ms['p50 latency']:.0f} | "
                                 f"{ms['p99 latency']:.0f} | {ms['p99 latency'] / ms['p50 latency']:.1f} | "
                                 f"{ms['Server Queue']:.1f} |")
        finally:
            server.stop()
    text = "\n".join([f"# single-query tail latency {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                      "", f"Machine: {machine()}; preset `{args.preset}`, dtype auto; ~16-token queries, one per "
                      f"request; perf_analyzer windows of {args.window_ms // 1000} s.", "",
                      "| server | protocol | concurrency | queries/s | p50 ms | p99 ms | p99 / p50 | queue ms |",
                      "|---|---|---|---|---|---|---|---|", *lines])
    publish(text, args.out, f"latency-{args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
