"""The bulk job against perf_analyzer's best on the same passages and model, one table.

    .venv/bin/python perf/bulk.py [--preset small|full] [--docs 512]

Starts a real Triton with the benchmark checkpoint, measures the passages workload (~256 tokens, one
text per request, gRPC) with perf_analyzer at concurrency 8 and 16, then runs `bge-m3-client embed`
on `--docs` of the same passages (dense + sparse into Parquet) with a few concurrency/batch settings,
and prints the job's documents/s next to perf_analyzer's best.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
from pathlib import Path

from perf.common import benchmark_checkpoint, embed_server, machine, parser, publish, work_folder
from perf.run import perf_analyzer_env, run_perf_analyzer, workloads


def run_job(corpus: Path, url: str, out: Path, concurrency: int, batch_size: int) -> dict[str, float]:
    command = [sys.executable, "-m", "bge_m3_client.cli", "embed", str(corpus), "--url", url, "--protocol", "grpc",
               "--output", str(out), "--concurrency", str(concurrency), "--batch-size", str(batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--docs", type=int, default=512)
    args = options.parse_args()

    from bge_m3_triton.core.tokens import load_tokenizer

    checkpoint = benchmark_checkpoint(args.preset)
    work = work_folder("bulk")
    tokenizer = load_tokenizer(checkpoint)
    passages = next(w for w in workloads(tokenizer, work, quick=False) if w.name == "passages")
    passages = dataclasses.replace(passages, concurrency=[8, 16], protocols=("grpc",))
    texts = [row["TEXT"][0] for row in json.loads(passages.data.read_text())["data"]]
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": texts[i % len(texts)]}) + "\n"
                              for i in range(args.docs)))
    server = embed_server(checkpoint, work)
    rows: list[tuple[str, float]] = []
    try:
        measured = run_perf_analyzer(passages, "grpc", server.grpc, work / "pa.csv", 15000, perf_analyzer_env())
        for row in measured:
            if "error" not in row:
                rows.append((f"perf_analyzer, concurrency {row['Concurrency']}", float(row["Inferences/Second"])))
        for concurrency, batch in ((8, 8), (4, 64), (16, 4)):
            out = work / f"out-{concurrency}-{batch}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            summary = run_job(corpus, server.grpc, out, concurrency, batch)
            rows.append((f"bge-m3-client embed --concurrency {concurrency} --batch-size {batch}",
                         float(summary["documents_per_s"])))
    finally:
        server.stop()
    best = max((rate for name, rate in rows if name.startswith("perf_analyzer")), default=0.0)
    lines = [f"# bulk job against perf_analyzer {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             "", f"Machine: {machine()}; preset `{args.preset}`, dtype auto; passages of ~256 tokens, dense + sparse; "
             f"the job embeds {args.docs} of them into Parquet over gRPC.", "",
             "| what | passages/s | of perf_analyzer's best |", "|---|---|---|"]
    lines += [f"| {name} | {rate:.2f} | {rate / best:.0%} |" if best else f"| {name} | {rate:.2f} | — |"
              for name, rate in rows]
    text = "\n".join(lines)
    publish(text, args.out, f"bulk-{args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
