"""Load tests with perf_analyzer: our models against a naive FlagEmbedding baseline, one markdown table.

    perf/run.sh [--preset full] [--quick] [--skip-baseline]

Starts a real Triton per configuration with the launcher, drives it with perf_analyzer 2.51 (from
the tritonclient wheel) over HTTP and gRPC, reads Triton's server-side split from perf_analyzer's
CSV, measures the server's peak RSS, and the model core's own throughput outside Triton on the
same texts. Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from perf.ceiling import Ceiling, for_checkpoint
from perf.common import benchmark_checkpoint, machine
from perf.corpus import make_texts

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclasses.dataclass
class Workload:
    """One perf_analyzer scenario: a model, its input texts, a request shape, concurrency levels."""

    name: str
    model: str
    data: Path
    tokens_per_item: float
    items_per_request: int
    concurrency: list[int]
    parameters: dict[str, str]
    protocols: tuple[str, ...] = ("http", "grpc")


def perf_analyzer_binary() -> str:
    """perf_analyzer from this venv (tritonclient wheel) or PATH (Triton's SDK image)."""
    local = Path(sys.prefix) / "bin" / "perf_analyzer"
    found = str(local) if local.is_file() else shutil.which("perf_analyzer")
    if not found:
        raise SystemExit("perf_analyzer not found: pip install tritonclient==2.51.0, or use the Triton SDK image")
    return found


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer needs libb64 and libcudart; the pytriton wheel bundles both under hashed names."""
    try:
        import pytriton
    except ImportError:  # the SDK image has them installed
        return dict(os.environ)

    libs = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    target = REPO / ".cache" / "perf" / "lib"
    target.mkdir(parents=True, exist_ok=True)
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
        link = target / name
        if not link.exists():
            link.symlink_to(next(libs.glob(pattern)))
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join((str(target), env.get("LD_LIBRARY_PATH", "")))
    return env


def write_data(path: Path, rows: list[dict[str, list[str]]]) -> Path:
    path.write_text(json.dumps({"data": rows}, ensure_ascii=False), encoding="utf-8")
    return path


def workloads(tokenizer: object, folder: Path, quick: bool) -> list[Workload]:
    """Queries ~16 tokens, passages ~256 (one per request, or 32 per request), long ~2,048, mixed; rerank:
    one query with 20 passages."""
    queries = make_texts(tokenizer, 64, 16, seed=1)
    passages = make_texts(tokenizer, 64, 256, seed=2)
    longs = make_texts(tokenizer, 8, 2048, seed=3)
    mixed = queries[:24] + passages[:32] + longs[:2]
    one = lambda name, texts: write_data(folder / f"{name}.json", [{"TEXT": [t]} for t in texts])  # noqa: E731
    # perf_analyzer fills a batch of -b 20 from 20 consecutive steps: one query, 20 passages each.
    pairs = [{"QUERY": [queries[i // 20]], "PASSAGE": [passages[i % 64]]} for i in range(160)]
    rerank_data = write_data(folder / "rerank.json", pairs)
    mean = lambda texts: sum(len(tokenizer(t)["input_ids"]) for t in texts) / len(texts)  # noqa: E731
    passage = {"mode": "passage"}
    return [
        Workload("queries", "bge_m3", one("queries", queries), mean(queries), 1, [1] if quick else [1, 8], {}),
        Workload("passages", "bge_m3", one("passages", passages), mean(passages), 1,
                 [16] if quick else [1, 4, 16], passage),
        Workload("passages x32", "bge_m3", one("passages", passages), mean(passages), 32, [1], passage, ("grpc",)),
        Workload("long", "bge_m3", one("long", longs), mean(longs), 1, [2], passage, ("grpc",)),
        Workload("mixed", "bge_m3", one("mixed", mixed), mean(mixed), 1, [8], passage, ("grpc",)),
        Workload("rerank 1x20", "bge_m3_rerank", rerank_data, mean(passages) + mean(queries[:8]) / 20, 20,
                 [2], {}, ("grpc",)),
    ]


def fit_interval(base_ms: int, request_ms: float, concurrency: int = 1) -> int:
    """A measurement window long enough for ~20 requests at the measured request time (the server
    completes about one per request time whatever the concurrency) and for 4 batches of `concurrency`
    requests (a window holding two, as 16 fp32 passages on 2 cores in 8 s, never stabilized), never
    below `base_ms`, at most 2 minutes: a slow machine gets longer windows rather than failures."""
    return int(min(120_000, max(base_ms, 20 * request_ms, 4 * concurrency * request_ms)))


def probe_request_ms(workload: Workload, protocol: str, url: str) -> float:
    """The longest of a few single requests spread over this workload's data, as perf_analyzer sends them."""
    import numpy as np
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    module: object = grpc if protocol == "grpc" else http
    data = json.loads(workload.data.read_text(encoding="utf-8"))["data"]
    rows = [data[i * (len(data) - 1) // 4] for i in range(5)]  # first to last: mixed workloads vary
    client = module.InferenceServerClient(url)  # type: ignore[attr-defined]
    times = []
    try:
        for row in rows:
            inputs = []
            for name, values in row.items():
                array = np.array([v.encode("utf-8") for v in values] * workload.items_per_request,
                                 dtype=object).reshape(-1, 1)
                tensor = module.InferInput(name, list(array.shape), "BYTES")  # type: ignore[attr-defined]
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            params = workload.parameters if protocol == "grpc" else {}
            start = time.perf_counter()
            client.infer(workload.model, inputs, parameters=params or None)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        client.close()
    return max(times)


def run_perf_analyzer(workload: Workload, protocol: str, url: str, out_csv: Path, interval_ms: int,
                      env: dict[str, str]) -> list[dict[str, str]]:
    """One perf_analyzer run per concurrency level; the CSV rows of all levels.

    Windows are fitted to the measured request time. A level that does not stabilize, or fails, gives
    a row saying so (with perf_analyzer's last measurement when it printed one) and the run goes on.
    """
    rows: list[dict[str, str]] = []
    request_ms = probe_request_ms(workload, protocol, url)
    for level in sorted(set(workload.concurrency)):
        level_csv = out_csv.with_suffix(f".c{level}.csv")
        level_csv.unlink(missing_ok=True)
        window = fit_interval(interval_ms, request_ms, level)
        command = [perf_analyzer_binary(), "-m", workload.model, "-u", url, "-i", protocol,
                   "--input-data", str(workload.data), "-b", str(workload.items_per_request),
                   "--concurrency-range", f"{level}:{level}", "--measurement-interval", str(window),
                   "--stability-percentage", "50", "--max-trials", "8", "-f", str(level_csv)]
        # perf_analyzer 2.51 sends request parameters over gRPC only; over HTTP the texts go in the default
        # query mode, the same work for texts under the 512-token query limit (the passage workload).
        for key, value in workload.parameters.items() if protocol == "grpc" else ():
            command += ["--request-parameter", f"{key}:{value}:string"]
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
            failed = result.returncode != 0 or not level_csv.is_file()
            output = result.stdout + result.stderr
        except subprocess.TimeoutExpired as exc:
            failed, output = True, f"timed out after {exc.timeout} s"
        if failed:
            rows.append({"Concurrency": str(level), "error": describe_failure(output, window)})
            print(f"[perf] {workload.name}/{protocol} c{level}: {rows[-1]['error']}", flush=True)
            continue
        with level_csv.open() as handle:
            rows += list(csv.DictReader(handle))
    return rows


def describe_failure(output: str, window_ms: int) -> str:
    """perf_analyzer's reason, and its last throughput when it printed one."""
    reason = "did not stabilize in 8 windows" if "stable" in output else (output.strip().splitlines() or ["?"])[-1]
    throughputs = re.findall(r"Throughput: ([0-9.]+) infer/sec", output)
    last = f"; last window {float(throughputs[-1]):.2f} texts/s" if throughputs else ""
    return f"{reason} ({window_ms / 1000:.0f} s windows){last}"[:200]


def process_tree_peak_rss_mib(pid: int) -> float:
    """Sum of each process's peak RSS (VmHWM) over tritonserver, its stubs and the launcher, MiB."""
    from bge_m3_triton.ops.processes import tree_rss_mib

    return float(tree_rss_mib(pid, "VmHWM"))


def process_tree_rss_mib(pid: int) -> float:
    """Current memory of a process tree, MiB: its proportional set size (PSS), which counts the
    instances' shared, mapped weights once rather than once per process."""
    from bge_m3_triton.ops.processes import tree_rss_mib

    return float(tree_rss_mib(pid, "Pss"))


class RssSampler:
    """Samples a process tree's RSS every 20 ms while in a `with` block; `peak` is the largest."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process_tree_rss_mib(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def core_timings(checkpoint: Path, texts: list[str], queries: list[str], dtype: str) -> tuple[float, float]:
    """The model core alone (no Triton): texts/s on `texts` (median of 3 after a warm-up), and the
    median milliseconds of one query at a time."""
    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings

    model = M3Model.load(ModelSettings(model=str(checkpoint), dtype=dtype, device="cpu"))
    lengths = [8192] * len(texts)
    model.encode(texts[:4], lengths[:4])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.encode(texts, lengths)
        times.append(time.perf_counter() - start)
    single = []
    for query in queries[:20]:
        start = time.perf_counter()
        model.encode([query], [512])
        single.append(time.perf_counter() - start)
    return len(texts) / statistics.median(times), statistics.median(single) * 1000


def table_rows(label: str, workload: Workload, protocol: str, rows: list[dict[str, str]],
               ceiling: Ceiling | None = None) -> list[str]:
    out = []
    for row in rows:
        if "error" in row:
            out.append(f"| {label} | {workload.name} | {protocol} | {row['Concurrency']} | "
                       f"{row['error']} |" + " |" * 9)
            continue
        rps = float(row["Inferences/Second"])  # per item: with -b 20 it already counts pairs

        def us(key: str, row: dict[str, str] = row) -> float:  # microseconds -> ms
            return float(row.get(key, 0) or 0) / 1000

        share = f"{ceiling.share(rps * workload.tokens_per_item):.0%}" if ceiling else "—"
        out.append(
            f"| {label} | {workload.name} | {protocol} | {row['Concurrency']} | "
            f"{rps:.2f} | {rps * workload.tokens_per_item:,.0f} | {share} | "
            f"{us('p50 latency'):.0f} | {us('p95 latency'):.0f} | {us('p99 latency'):.0f} | "
            f"{us('Server Queue'):.1f} | {us('Server Compute Input'):.1f} | {us('Server Compute Infer'):.1f} | "
            f"{us('Server Compute Output'):.1f} |")
    return out


def external(args: argparse.Namespace) -> int:
    """Load a server that is already running (e.g. the compose file's `perf` service)."""
    from transformers import AutoTokenizer

    work = REPO / ".cache" / "perf" / "external"
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or REPO / "src" / "bge_m3_triton" / "assets" /
                                              "xlmr-tokenizer")
    lines = []
    for workload in workloads(tokenizer, work, args.quick):
        if workload.model != "bge_m3_rerank":
            rows = run_perf_analyzer(workload, "grpc", args.url, work / f"{workload.name.split()[0]}.csv",
                                     8000 if args.quick else 15000, perf_analyzer_env())
            lines += table_rows("server", workload, "grpc", rows)
    print("\n".join([HEADER, RULE, *lines]))
    return 0


HEADER = ("| server | workload | protocol | concurrency | texts/s | tokens/s | of ceiling | p50 ms | p95 ms | "
          "p99 ms | queue ms | input ms | infer ms | output ms |")
RULE = "|" + "---|" * HEADER.count(" | ") + "---|"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("small", "full"), default="full")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer concurrency levels, shorter windows")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--only", help="comma-separated workload names to run (default: all), e.g. "
                        "'queries,passages,passages x32'")
    parser.add_argument("--label", default="", help="added to the result file's name (e.g. avx2cap-fp32)")
    parser.add_argument("--out", type=Path, default=REPO / "perf" / "results")
    parser.add_argument("--url", help="gRPC host:port of a running server to load (no baseline, no RSS)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder for --url (default: the checkpoint's)")
    args = parser.parse_args()
    if args.url:
        return external(args)

    from bge_m3_triton.core.tokens import load_tokenizer
    from bge_m3_triton.ops.processes import start_server

    checkpoint = benchmark_checkpoint(args.preset)
    threads = len(os.sched_getaffinity(0))
    ceiling = for_checkpoint(checkpoint, args.dtype, threads)
    fp32_ceiling = ceiling if ceiling.dtype == "float32" else for_checkpoint(checkpoint, "float32", threads)
    work = REPO / ".cache" / "perf" / "run"
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(checkpoint)
    loads = workloads(tokenizer, work, args.quick)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        unknown = wanted - {w.name for w in loads}
        if unknown:
            parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
        loads = [w for w in loads if w.name in wanted]
    env = perf_analyzer_env()
    interval = 8000 if args.quick else 15000
    lines: list[str] = []
    notes: list[str] = []

    configs = [("bge-m3-triton", ["--dtype", args.dtype], None, loads)]
    if not args.skip_baseline:
        baseline_loads = [dataclasses.replace(w, concurrency=[1, 2], protocols=("http",)) for w in loads
                          if w.name == "passages"]
        configs.append(("baseline (FlagEmbedding per request, fp32)", ["--model-repository",
                        str(HERE / "baseline_repository"), "--models", "bge_m3"], "baseline", baseline_loads))
    started = datetime.datetime.now()
    stem = "-".join(part for part in (args.preset, args.label) if part)
    out_file = args.out / f"{stem}-{started:%Y%m%d-%H%M}.md"

    def write_report(final: bool) -> str:
        """The table so far; written after every workload so an abort never loses measured rows."""
        report = [f"# perf run {started.astimezone(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
                  + ("" if final else " (incomplete)"), "",
                  f"Machine: {machine()}; preset `{args.preset}`, dtype `{args.dtype}` (runs {ceiling.dtype}); "
                  f"perf_analyzer 2.51, windows of at least {interval // 1000} s (longer where ~20 requests need "
                  "longer); one text per request (rerank: 20 pairs).", "",
                  ceiling.line() + ("" if fp32_ceiling is ceiling else f" The fp32 baseline's row is measured "
                                    f"against the fp32 ceiling, {fp32_ceiling.gflops:,.0f} GFLOP/s."), "",
                  HEADER, RULE, *lines, "", *[f"- {note}" for note in notes]]
        text = "\n".join(report)
        args.out.mkdir(parents=True, exist_ok=True)
        out_file.write_text(text + "\n")
        return text

    for label, extra, kind, config_loads in configs:
        server_args = ["--model", str(checkpoint), "--workdir", str(work / "server"), *extra]
        server = start_server(work, server_args, ["bge_m3"])
        try:
            for workload in config_loads:
                for protocol in workload.protocols:
                    url = server.http if protocol == "http" else server.grpc
                    out_csv = work / f"{label.split()[0]}-{workload.name.split()[0]}-{protocol}.csv"
                    print(f"[perf] {label}: {workload.name} over {protocol}", flush=True)
                    rows = run_perf_analyzer(workload, protocol, url, out_csv, interval, env)
                    lines += table_rows(label.split(" (")[0], workload, protocol, rows,
                                        ceiling if kind is None else fp32_ceiling)
                    write_report(final=False)
            if kind is None:
                from bge_m3_client import BGEM3Client

                long_text = make_texts(tokenizer, 1, 8192, seed=4)
                before = process_tree_rss_mib(server.process.pid)
                with BGEM3Client(server.http, timeout=1800) as client, RssSampler(server.process.pid) as sampler:
                    result = client.encode(long_text, is_passage=True, return_colbert=True)
                notes.append(f"One {result[0].tokens}-token passage, dense+sparse+ColBERT: server PSS "
                             f"{before:,.0f} MiB before, {sampler.peak:,.0f} MiB at most during the request.")
            notes.append(f"{label}: server PSS {process_tree_rss_mib(server.process.pid):,.0f} MiB after its runs; "
                         f"sum of the processes' peak RSS (VmHWM, loading included, shared pages counted in "
                         f"each) {process_tree_peak_rss_mib(server.process.pid):,.0f} MiB.")
        finally:
            server.stop()
    passages = make_texts(tokenizer, 64, 256, seed=2)
    core, query_ms = core_timings(checkpoint, passages, make_texts(tokenizer, 64, 16, seed=1), args.dtype)
    core_tokens = core * loads[1].tokens_per_item
    notes.append(f"Model core alone (no Triton), the 64 passages in one call: {core:.2f} passages/s "
                 f"({ceiling.share(core_tokens):.0%} of the ceiling); one query (~16 tokens) at a time: "
                 f"{query_ms:.1f} ms median.")

    print(write_report(final=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
