"""`bge-m3-client`: command-line tools on the client. `embed` indexes a corpus (see `bge_m3_client.bulk`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bge_m3_client import formats

EMBED_HELP = """Embed a corpus into a Parquet dataset or Qdrant. INPUT is JSONL, CSV, Parquet or plain text
(one document a line, its line number the id), read as a stream. Rerun the same command after a crash
or Ctrl-C: what the output already holds is skipped. Exit codes: 0 every document embedded; 1 some
failed or were malformed (listed, with the reason, in the failed file); 2 stopped early (--strict,
--max-failures); 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bge-m3-client", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser("embed", help="embed a corpus into Parquet or Qdrant, resumably",
                                description=EMBED_HELP)
    embed.add_argument("input", type=Path, help="the corpus file")
    embed.add_argument("--url", default="localhost:8000", help="Triton, HOST:PORT (default localhost:8000)")
    embed.add_argument("--protocol", choices=("http", "grpc"), default="http")
    out = embed.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", type=Path, metavar="DIR", help="write a Parquet dataset of part files here")
    out.add_argument("--qdrant", metavar="URL_OR_PATH",
                     help="a Qdrant server (http://host:6333), a local folder or :memory: (qdrant-client's "
                          "local mode), or edge:FOLDER (Qdrant Edge, the embedded engine)")
    embed.add_argument("--collection", help="the Qdrant collection (made when missing)")
    embed.add_argument("--format", choices=("jsonl", "csv", "parquet", "text"), help="default: from the suffix")
    embed.add_argument("--id-field", default="id", help="the id's field or column (default id; the line "
                                                        "number when a record has none)")
    embed.add_argument("--text-field", default="text", help="the text's field or column (default text)")
    embed.add_argument("--queries", action="store_true", help="embed as queries (default: passages)")
    embed.add_argument("--colbert", action="store_true", help="also ColBERT vectors")
    embed.add_argument("--dense-format", choices=formats.FORMATS, default=formats.FLOAT32,
                       help="the dense vectors' numeric format, in Parquet and Qdrant (docs/formats.md)")
    embed.add_argument("--colbert-format", choices=formats.FORMATS, default=formats.FLOAT32,
                       help="the ColBERT vectors' numeric format (float16 takes half the space)")
    embed.add_argument("--concurrency", type=int, default=8, help="batches in flight (default 8)")
    embed.add_argument("--batch-size", type=int, default=64, help="documents per request (default 64)")
    embed.add_argument("--max-length", type=int, help="tokens per document (default: the server's)")
    embed.add_argument("--colbert-max-vectors", type=int,
                       help="Qdrant: keep at most this many ColBERT vectors of a document (default and upper "
                            "bound: what fits Qdrant's 1,048,576-float multivector, 1,024 for BGE-M3)")
    embed.add_argument("--failed", type=Path, help="where failed and malformed documents are listed (default "
                                                   "DIR/_failed.jsonl, or failed-COLLECTION.jsonl)")
    embed.add_argument("--strict", action="store_true", help="stop at the first malformed record")
    embed.add_argument("--max-failures", type=int, default=100_000, help="stop after this many failed documents")
    embed.add_argument("--retries", type=int, default=3, help="retries of an unavailable server (default 3)")
    embed.add_argument("--part-rows", type=int, default=10_000, help="Parquet: documents per part file")
    return parser


def make_sink(args: argparse.Namespace) -> tuple[Any, Path]:
    """The output the arguments name, and the failed file's path."""
    try:
        return _make_sink(args)
    except ValueError as exc:  # a format the output cannot store
        raise SystemExit(f"bge-m3-client embed: {exc}") from None


def _make_sink(args: argparse.Namespace) -> tuple[Any, Path]:
    if args.output is not None:
        from bge_m3_client.bulk.parquet import ParquetSink

        return ParquetSink(args.output, args.colbert, part_rows=args.part_rows, dense_format=args.dense_format,
                           colbert_format=args.colbert_format), \
            args.failed or args.output / "_failed.jsonl"
    if args.qdrant.startswith("edge:"):
        from bge_m3_client.bulk.qdrant import EdgeSink

        return EdgeSink(args.qdrant[5:], args.colbert, args.colbert_max_vectors, args.dense_format,
                        args.colbert_format), \
            args.failed or Path(args.qdrant[5:].rstrip("/") + "-failed.jsonl")
    if not args.collection:
        raise SystemExit("bge-m3-client embed: --qdrant needs --collection")
    from bge_m3_client.bulk.qdrant import QdrantSink

    return QdrantSink(args.qdrant, args.collection, args.colbert, args.colbert_max_vectors,
                      dense_format=args.dense_format, colbert_format=args.colbert_format), \
        args.failed or Path(f"failed-{args.collection}.jsonl")


def embed(args: argparse.Namespace) -> int:
    from bge_m3_client.bulk.job import EmbedJob, JobOptions
    from bge_m3_client.bulk.reader import detect_format
    from bge_m3_client.client import BGEM3Client

    if not args.input.is_file():
        print(f"bge-m3-client embed: {args.input} is not a file", file=sys.stderr)
        return 2
    sink, failed = make_sink(args)
    options = JobOptions(input=args.input, fmt=args.format or detect_format(args.input), failed_path=failed,
                         id_field=args.id_field, text_field=args.text_field, queries=args.queries,
                         colbert=args.colbert, concurrency=args.concurrency, batch_size=args.batch_size,
                         max_length=args.max_length, strict=args.strict, max_failures=args.max_failures,
                         dense_format=args.dense_format, colbert_format=args.colbert_format)
    client = BGEM3Client(args.url, protocol=args.protocol, retries=args.retries)
    # SIGTERM stops as Ctrl-C does; SIGINT too even where the job was started in the background (a shell
    # starts `job &` with SIGINT ignored, and Python then keeps it ignored).
    previous = {number: signal.signal(number, signal.default_int_handler) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        outcome = EmbedJob(client, sink, options).run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    summary = {**outcome.counts.summary(outcome.seconds), "output": sink.where(), "failed_file": str(failed),
               "exit_code": outcome.exit_code, "result": outcome.reason, "peak_rss_mib": _peak_rss_mib()}
    counts = outcome.counts
    print(f"[embed] {outcome.reason}. {counts.embedded:,} embedded ({counts.tokens:,} tokens, {counts.truncated:,} "
          f"truncated), {counts.skipped:,} already done, {counts.failed:,} failed, {counts.malformed:,} malformed"
          + (f", {counts.cut_colbert:,} with ColBERT cut to Qdrant's limit" if counts.cut_colbert else "")
          + f" in {outcome.seconds:,.1f} s.", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    if outcome.exit_code == 130:  # in-flight requests are abandoned: leave without waiting for them
        sys.stderr.flush()
        os._exit(130)
    client.close()
    return outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return embed(args)
    except BrokenPipeError:
        return 1



def _peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


if __name__ == "__main__":
    sys.exit(main())

