"""Single-query latency: a lone query against the bare model core, and the tail at concurrency 1 and 8
(perf_analyzer, gRPC and HTTP), with the collector's adaptive queue delay against no delay at all.

    .venv/bin/python perf/latency.py [--preset small] [--window-ms 20000] [--compare "NAME=SERVE FLAGS"]
                                     [--defaults-only]

The lone-query rows alternate blocks of 20 sequential queries served (gRPC then HTTP, HTTP then gRPC in
the next round) and run through the model core in this process (`M3Model.encode`, tokenizing included),
so the VM's drift hits both sides alike; the ratio is of the medians of all blocks. perf_analyzer keeps
the last three stable windows, so a 20 s window measures each row over at least 60 s. Passages at
concurrency 16 show what the delay does to throughput.
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
import sys
import time
from typing import Any

from perf import noise
from perf.common import benchmark_checkpoint, embed_server, machine, parser, publish, work_folder
from perf.corpus import make_texts
from perf.run import perf_analyzer_env, run_perf_analyzer, workloads

BLOCK, ROUNDS = 20, 6


def lone_query_rows(label: str, server: Any, model: Any, queries: list[str]) -> tuple[list[str], float]:
    """Served vs core medians of one query at a time, in alternating blocks; and the core's median, ms."""
    from bge_m3_client import BGEM3Client

    def timed(call: Any, texts: list[str]) -> list[float]:
        out = []
        for text in texts:
            start = time.perf_counter()
            call(text)
            out.append((time.perf_counter() - start) * 1000)
        return out

    clients = {"grpc": BGEM3Client(server.grpc, protocol="grpc"), "http": BGEM3Client(server.http, protocol="http")}
    served: dict[str, list[float]] = {name: [] for name in clients}
    core: list[float] = []
    try:
        calls = {name: (lambda text, c=client: c.encode([text], return_colbert=True))
                 for name, client in clients.items()}
        for call in calls.values():
            timed(call, queries[:5])
        timed(lambda text: model.encode([text], [512]), queries[:5])
        for round_ in range(ROUNDS):
            block = queries[(round_ * BLOCK) % len(queries):][:BLOCK]
            for name in sorted(calls, reverse=bool(round_ % 2)):  # each protocol in turn right after the core
                served[name] += timed(calls[name], block)
            core += timed(lambda text: model.encode([text], [512]), block)
    finally:
        for client in clients.values():
            client.close()
    bare, core_p99 = statistics.median(core), statistics.quantiles(core, n=100)[98]
    return [f"| {label} | {name} | {statistics.median(times):.1f} | {bare:.1f} | "
            f"{statistics.median(times) / bare:.2f} | {statistics.quantiles(times, n=100)[98]:.1f} | {core_p99:.1f} |"
            for name, times in served.items()], bare


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--window-ms", type=int, default=20000)
    options.add_argument("--compare", action="append", default=[], metavar="NAME=SERVE FLAGS",
                         help="another server to measure beside the default")
    options.add_argument("--defaults-only", action="store_true", help="skip the no-delay server")
    args = options.parse_args()

    import torch

    from bge_m3_triton.core.devices import configure_threads
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings
    from bge_m3_triton.core.tokens import load_tokenizer
    from bge_m3_triton.ops.processes import tree_rss_mib

    checkpoint = benchmark_checkpoint(args.preset)
    work = work_folder("latency")
    tokenizer = load_tokenizer(checkpoint)
    named = {w.name: w for w in workloads(tokenizer, work, quick=True)}
    queries, passages = named["queries"], named["passages"]
    lone_queries = make_texts(tokenizer, 64, 16, seed=1)
    configure_threads(0)
    model = M3Model.load(ModelSettings(model=str(checkpoint), dtype="auto", device="cpu"))
    servers = [("adaptive 5 ms (default)", [])]
    if not args.defaults_only:
        servers.append(("no delay", ["--queue-delay-us", "0"]))
    servers += [(text.split("=", 1)[0], text.split("=", 1)[1].split()) for text in args.compare]
    lines: list[str] = []
    lone: list[str] = []
    memory: list[str] = []
    bare: list[float] = []
    for label, extra in servers:
        server = embed_server(checkpoint, work, *extra)
        try:
            rows, core_ms = lone_query_rows(label, server, model, lone_queries)
            lone += rows
            bare.append(core_ms)
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
    target = statistics.median(bare)
    floor = [noise.measure(target, threads, str(model.dtype).removeprefix("torch."))
             for threads in sorted({1, torch.get_num_threads()})]
    text = "\n".join([
        f"# single-query latency {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
        f"Machine: {machine()}; preset `{args.preset}`, dtype auto, one model instance; ~16-token queries and "
        f"~256-token passages, one per request, all three outputs.", "",
        f"A lone query, one at a time ({ROUNDS} alternating blocks of {BLOCK}): served through the client "
        "against the model core in-process.", "",
        "| server | protocol | served p50 ms | core p50 ms | served / core | served p99 ms | core p99 ms |",
        "|---|---|---|---|---|---|---|", *lone, "",
        f"perf_analyzer, windows of {args.window_ms // 1000} s (the last three stable ones kept).", "",
        "| server | workload | protocol | concurrency | texts/s | p50 ms | p99 ms | p99 / p50 | queue ms |",
        "|---|---|---|---|---|---|---|---|---|", *lines, "",
        f"The machine's own tail (`perf/noise.py`, after the servers): Linear layers in the model's dtype, "
        f"~{target:.0f} ms of them (the core's lone query), timed 600 times:", "", *[f"- {n.line()}" for n in floor],
        "",
        "Memory of the server's process tree after the runs (Triton and its stub). PSS counts shared pages once.",
        "", "| server | PSS MiB | RSS sum MiB | sum of peaks MiB |", "|---|---|---|---|", *memory])
    publish(text, args.out, f"latency-{args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
