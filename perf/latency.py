"""Tail latency of single short queries and passages throughput, one Triton instance against two
(perf_analyzer, gRPC and HTTP).

    .venv/bin/python perf/latency.py [--preset small] [--window-ms 20000]

Shows Triton's dynamic-batcher stall and what avoids it: with one model instance, a request that
arrives while the instance is still releasing its previous batch finds no free slot, so `Enqueue`
does not wake the batcher, which had already gone back to its 500 ms idle wait
(`default_wait_microseconds` in Triton's dynamic_batch_scheduler.cc); the request waits out that
timeout. With two instances a slot is always free and the batcher is woken at once. The default
(two instances, one forward slot) lets one instance compute at a time with all the cores; the
alternative splits the cores between two instances that compute at once.
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
    from bge_m3_triton.ops.processes import tree_rss_mib

    checkpoint = benchmark_checkpoint(args.preset)
    work = work_folder("latency")
    named = {w.name: w for w in workloads(load_tokenizer(checkpoint), work, quick=True)}
    queries, passages = named["queries"], named["passages"]
    lines: list[str] = []
    memory: list[str] = []
    servers = (("1 instance, all cores", ["--instances", "1"]),
               ("2 instances, 1 forward slot, all cores (default)", []),
               ("2 instances computing at once, half the cores each", ["--forward-slots", "0"]))
    for label, extra in servers:
        server = embed_server(checkpoint, work, *extra)
        try:
            runs = [dataclasses.replace(queries, concurrency=[1, 8], protocols=(protocol,))
                    for protocol in ("grpc", "http")]
            runs.append(dataclasses.replace(passages, concurrency=[16], protocols=("grpc",)))
            for workload in runs:
                protocol = workload.protocols[0]
                url = server.grpc if protocol == "grpc" else server.http
                for row in run_perf_analyzer(workload, protocol, url, work / f"{protocol}.csv", args.window_ms,
                                             perf_analyzer_env()):
                    if "error" in row:
                        lines.append(f"| {label} | {workload.name} | {protocol} | {row['Concurrency']} | "
                                     f"{row['error']} | | | | |")
                        continue
                    ms = {key: float(row[key]) / 1000 for key in ("p50 latency", "p99 latency", "Server Queue")}
                    lines.append(f"| {label} | {workload.name} | {protocol} | {row['Concurrency']} | "
                                 f"{float(row['Inferences/Second']):.1f} | {ms['p50 latency']:.0f} | "
                                 f"{ms['p99 latency']:.0f} | {ms['p99 latency'] / ms['p50 latency']:.1f} | "
                                 f"{ms['Server Queue']:.1f} |")
            pid = server.process.pid
            memory.append(f"| {label} | {tree_rss_mib(pid, 'Pss'):,.0f} | {tree_rss_mib(pid):,.0f} | "
                          f"{tree_rss_mib(pid, 'VmHWM'):,.0f} |")
        finally:
            server.stop()
    text = "\n".join([f"# single-query tail latency {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                      "", f"Machine: {machine()}; preset `{args.preset}`, dtype auto; ~16-token queries and "
                      f"~256-token passages, one per request, all three outputs; perf_analyzer windows of "
                      f"{args.window_ms // 1000} s.", "",
                      "| server | workload | protocol | concurrency | texts/s | p50 ms | p99 ms | p99 / p50 "
                      "| queue ms |",
                      "|---|---|---|---|---|---|---|---|---|", *lines, "",
                      "Memory of the server's process tree after the runs (Triton and its stubs). PSS counts pages "
                      "shared between processes (the instances' mapped weights) once; the RSS sum counts them in "
                      "every process that maps them.", "",
                      "| server | PSS MiB | RSS sum MiB | sum of peaks MiB |", "|---|---|---|---|", *memory])
    publish(text, args.out, f"latency-{args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
