"""Passages under 16 concurrent single-text requests and in one 32-text request at a time, against the
model core alone and the matmul ceiling, measured side by side in rounds.

    .venv/bin/python perf/concurrency.py [--preset small] [--rounds 3] [--compare "NAME=SERVE FLAGS" ...]

This VM's speed drifts by 10-15% within minutes, so a throughput is only compared with figures taken
next to it: each round measures the ceiling, the core alone (the same passages, 8 per `encode` call, as
the server's batches hold about that many), then each server in turn (all are started first and wait
idle while another is loaded): 16 concurrent single passages, then 32 passages per request, one request
at a time (perf_analyzer, gRPC, all three outputs). `--compare` adds servers started with other `serve` flags, e.g.
`--compare "2 instances=--instances 2"` (or `--model-repository` on a variant of `model_repository/`).
"""

from __future__ import annotations

import dataclasses
import datetime
import shlex
import statistics
import sys
import time

from perf.ceiling import for_checkpoint
from perf.common import benchmark_checkpoint, embed_server, machine, parser, publish, work_folder
from perf.corpus import make_texts
from perf.run import perf_analyzer_env, run_perf_analyzer, workloads


def core_rate(model: object, texts: list[str], seconds: float, per_call: int = 8) -> float:
    """Texts/s of the model core alone, `per_call` texts per `encode`, for about `seconds`."""
    encode = model.encode  # type: ignore[attr-defined]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(0, len(texts), per_call):
            chunk = texts[i:i + per_call]
            encode(chunk, [8192] * len(chunk))
            done += len(chunk)
    return done / (time.perf_counter() - start)


def time_split(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Where a server's time went during a run, from its forward counters: texts per forward pass, the
    shares of the wall time in forward passes and in answering, and texts/s within the forward passes."""
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    texts, forward_s = delta["forward_texts"], delta["forward_seconds"]
    return {"per_pass": texts / max(delta["forward_passes"], 1), "forward": forward_s / wall_s,
            "answer": delta["answer_seconds"] / wall_s, "forward_rate": texts / max(forward_s, 1e-9)}


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--window-ms", type=int, default=20000)
    options.add_argument("--compare", nargs="*", default=[], help="'NAME=SERVE FLAGS' servers to add")
    args = options.parse_args()

    from bge_m3_triton.core.devices import configure_threads
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings
    from bge_m3_triton.core.tokens import load_tokenizer

    checkpoint = benchmark_checkpoint(args.preset)
    work = work_folder("concurrency")
    tokenizer = load_tokenizer(checkpoint)
    by_name = {w.name: w for w in workloads(tokenizer, work, quick=True)}
    passages = dataclasses.replace(by_name["passages"], concurrency=[16], protocols=("grpc",))
    x32 = by_name["passages x32"]
    texts = make_texts(tokenizer, 64, 256, seed=2)
    variants = [("defaults", [])] + [(spec.split("=", 1)[0], shlex.split(spec.split("=", 1)[1]))
                                     for spec in args.compare]
    servers = {}
    try:
        for name, extra in variants:
            folder = work / f"server-{len(servers)}"
            folder.mkdir(exist_ok=True)
            servers[name] = embed_server(checkpoint, folder, *extra)
        threads = configure_threads(0)
        model = M3Model.load(ModelSettings(model=str(checkpoint), dtype="auto", device="cpu"))
        core_rate(model, texts[:8], 0)  # warm-up
        rounds: list[dict[str, float]] = []
        spent: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
        for number in range(args.rounds):
            ceiling = for_checkpoint(checkpoint, "auto", threads)
            row = {"ceiling": ceiling.gflops, "core": core_rate(model, texts, 15)}
            for name, server in servers.items():
                before, start = server.forward_totals(), time.monotonic()
                result = run_perf_analyzer(passages, "grpc", server.grpc, work / "c16.csv", args.window_ms,
                                           perf_analyzer_env())
                row[name] = float(result[0].get("Inferences/Second", "nan"))
                spent[name].append(time_split(before, server.forward_totals(), time.monotonic() - start))
                result = run_perf_analyzer(x32, "grpc", server.grpc, work / "x32.csv", args.window_ms,
                                           perf_analyzer_env())
                row[f"{name} x32"] = float(result[0].get("Inferences/Second", "nan"))
            row["share"] = ceiling.share(1.0 * passages.tokens_per_item)  # of one text/s
            rounds.append(row)
            print(f"[concurrency] round {number + 1}: {row}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    names = [column for name, _ in variants for column in (name, f"{name} x32")]
    lines = []
    for number, row in enumerate(rounds, 1):
        cells = [f"{row[name]:.2f} ({row[name] * row['share']:.0%}; {row[name] / row['core']:.2f}x core)"
                 for name in names]
        lines.append(f"| {number} | {row['ceiling']:,.0f} | {row['core']:.2f} ({row['core'] * row['share']:.0%}) | "
                     + " | ".join(cells) + " |")
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    ratios = {name: statistics.median(r[name] / r["core"] for r in rounds) for name in names}
    shares = {name: statistics.median(r[name] * r["share"] for r in rounds) for name in names}
    lines.append(f"| median | {median['ceiling']:,.0f} | {median['core']:.2f} "
                 f"({statistics.median(r['core'] * r['share'] for r in rounds):.0%}) | "
                 + " | ".join(f"{median[n]:.2f} ({shares[n]:.0%}; {ratios[n]:.2f}x core)" for n in names) + " |")
    split_lines = []
    for name, _ in variants:
        m = {key: statistics.median(r[key] for r in spent[name]) for key in spent[name][0]}
        split_lines.append(
            f"| {name} | {m['per_pass']:.1f} | {m['forward']:.0%} | {m['answer']:.1%} | "
            f"{1 - m['forward'] - m['answer']:.0%} | {m['forward_rate']:.2f} "
            f"({m['forward_rate'] / median['core']:.2f}x core) |")
    text = "\n".join([
        f"# passages under concurrency {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
        f"Machine: {machine()}; preset `{args.preset}`, dtype auto ({ceiling.dtype}), {threads} torch threads for the "
        f"core; ~{passages.tokens_per_item:.0f}-token passages, all three outputs; servers: 16 concurrent "
        f"single-passage gRPC requests, and one 32-passage request at a time (perf_analyzer, windows of at least "
        f"{args.window_ms // 1000} s, longer where ~20 requests need longer); core: the same "
        "passages, 8 per `encode` call, 15 s. Texts/s, with the share of the round's matmul ceiling.", "",
        "| round | ceiling GFLOP/s | core alone | "
        + " | ".join(f"server: {n}, 32 per request" if n.endswith(" x32") else f"server: {n}, 16 concurrent"
                     for n in names) + " |",
        "|---|---|---|" + "---|" * len(names), *lines, "",
        "Where each server's time went (medians over the rounds, from its `bge_m3_forward_*` and "
        "`bge_m3_answer_seconds_total` counters over each 16-concurrent perf_analyzer run, warm-up windows "
        "included): texts per forward pass; shares of the wall time spent in forward passes, in packing and "
        "sending their responses, and neither (waiting for requests, or `execute` alone); texts/s within the "
        "forward passes.", "",
        "| server | texts per pass | forward | answering | neither | texts/s in forward passes |",
        "|---|---|---|---|---|---|", *split_lines])
    publish(text, args.out, f"concurrency-{args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
