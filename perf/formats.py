"""Compact formats: what each keeps of float32's rankings, and what it saves on the wire.

    .venv/bin/python -m perf formats --encoder e5            # agreement on a trained encoder, and the bytes
    .venv/bin/python -m perf formats --throughput             # also throughput through Triton and the gateway

Agreement (in-process, the model core in fp32; every format made from the float32 vectors exactly as the
server makes it, bge_m3_client/formats.py): for queries over a passage set, dense retrieval top-10 overlap
with float32's top 10 (binary and ubinary ranked by Hamming distance; int8, uint8 and the binary formats
also with float32 rescoring of their top 100), ColBERT MaxSim against float32's over every query-passage
pair (Spearman correlation of the scores) and reranking top-10 overlap (each query's 30 best passages by
float32 dense, reranked by MaxSim). The passages are paragraphs of Python's own documentation (English,
varied) and the multilingual benchmark sentences; the queries, sentences drawn from other paragraphs.
Bytes: the HTTP response body for 32 passages with ColBERT in each format, through a real Triton on the
`--preset` checkpoint. Throughput (`--throughput`): 32 passages with ColBERT per request, client over gRPC
and HTTP and the gateway's /v1/m3/embed, in rounds that take turns.
"""

from __future__ import annotations

import datetime
import pydoc
import re
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bge_m3_client import formats
from perf.common import benchmark_checkpoint, embed_server, encoder_checkpoint, machine, parser, publish, work_folder
from perf.corpus import make_texts

MODULES = ("json", "csv", "sqlite3", "asyncio", "threading", "logging", "argparse", "pathlib", "socket", "email",
           "http.client", "urllib.request", "unittest", "decimal", "fractions", "statistics", "random", "shutil",
           "subprocess", "tarfile", "zipfile", "datetime", "collections", "itertools", "functools", "heapq",
           "bisect", "string", "textwrap", "difflib", "hashlib", "hmac", "secrets", "uuid", "gzip", "bz2", "lzma",
           "pickle", "shelve", "dbm", "configparser", "tomllib", "xml.dom", "html.parser", "ftplib", "smtplib",
           "imaplib", "calendar", "locale", "gettext", "inspect", "dis", "ast", "tokenize", "pdb", "trace",
           "timeit", "cProfile", "doctest", "typing", "dataclasses", "enum", "abc", "contextlib", "weakref",
           "copy", "pprint", "reprlib", "array", "queue", "sched", "select", "selectors", "signal", "mmap",
           "ssl", "ipaddress", "wave", "colorsys", "turtle", "cmd", "shlex", "tkinter", "venv", "zipapp")


def documentation_paragraphs(minimum: int = 240) -> list[str]:
    """Paragraphs of the standard library's own docstrings: real, varied English text, always at hand."""
    paragraphs: list[str] = []
    for name in MODULES:
        try:
            module = pydoc.locate(name)
        except Exception:
            continue
        members = [getattr(module, attr, None) for attr in dir(module) if not attr.startswith("_")][:40]
        objects = [module, *members]
        for obj in objects:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str):
                continue
            for block in re.split(r"\n\s*\n", doc):
                text = " ".join(block.split())
                if len(text) >= minimum and text not in paragraphs:
                    paragraphs.append(text)
    return paragraphs


def corpus(tokenizer: Any, passages: int, queries: int) -> tuple[list[str], list[str]]:
    """Passages (documentation paragraphs and multilingual benchmark texts) and queries (sentences of others)."""
    paragraphs = documentation_paragraphs()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(paragraphs))
    chosen = [paragraphs[i] for i in order[: passages - passages // 5]]
    chosen += make_texts(tokenizer, passages // 5, 200, seed=5)
    spare = [paragraphs[i] for i in order[passages: passages + queries]]
    asked = [re.split(r"(?<=[.!?])\s", text)[0][:300] for text in spare]
    return chosen, asked


def top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return len(set(a.tolist()) & set(b.tolist())) / len(a)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def dense_scores(queries: np.ndarray, passages: np.ndarray, fmt: str) -> np.ndarray:
    """Query x passage scores in `fmt`: cosine of the decoded vectors, or minus the Hamming distance."""
    q, q_scale = formats.encode(queries, fmt)
    p, p_scale = formats.encode(passages, fmt)
    if fmt in formats.PACKED:
        return -np.stack([formats.hamming(row, p) for row in q]).astype(np.float32)
    q_floats = formats.decode(q, fmt, q_scale)
    p_floats = formats.decode(p, fmt, p_scale)
    q_floats /= np.linalg.norm(q_floats, axis=1, keepdims=True)
    p_floats /= np.linalg.norm(p_floats, axis=1, keepdims=True)
    return q_floats @ p_floats.T


def maxsim(query: np.ndarray, passage: np.ndarray, fmt: str) -> float:
    """ColBERT's MaxSim of one query and one passage, both in `fmt` (the binary formats' signs, scaled to unit)."""
    q = formats.decode(*_pair(query, fmt))
    p = formats.decode(*_pair(passage, fmt))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return float((q @ p.T).max(axis=1).mean())


def _pair(vectors: np.ndarray, fmt: str) -> tuple[np.ndarray, str, np.ndarray | None]:
    values, scale = formats.encode(vectors, fmt)
    return values, fmt, scale


def agreement(query_dense: np.ndarray, passage_dense: np.ndarray, query_colbert: Sequence[np.ndarray],
              passage_colbert: Sequence[np.ndarray]) -> dict[str, dict[str, float]]:
    """Per format, the agreement figures with float32."""
    reference = dense_scores(query_dense, passage_dense, formats.FLOAT32)
    candidates = [top(row, 30) for row in reference]
    colbert_reference = np.array([[maxsim(query_colbert[i], passage_colbert[j], formats.FLOAT32) for j in cands]
                                  for i, cands in enumerate(candidates)])
    figures: dict[str, dict[str, float]] = {}
    for fmt in formats.FORMATS:
        scores = dense_scores(query_dense, passage_dense, fmt)
        row: dict[str, float] = {"dense top-10": float(np.mean([overlap(top(s, 10), top(r, 10))
                                                                for s, r in zip(scores, reference)]))}
        if fmt in formats.SCALED or fmt in formats.PACKED:
            rescored = []
            for s, r in zip(scores, reference):
                hundred = top(s, 100)
                rescored.append(overlap(hundred[top(r[hundred], 10)], top(r, 10)))
            row["dense top-10, float32 rescoring of 100"] = float(np.mean(rescored))
        colbert = np.array([[maxsim(query_colbert[i], passage_colbert[j], fmt) for j in cands]
                            for i, cands in enumerate(candidates)])
        row["ColBERT MaxSim Spearman"] = float(np.mean([spearman(a, b) for a, b in zip(colbert, colbert_reference)]))
        row["ColBERT rerank top-10"] = float(np.mean([overlap(top(a, 10), top(b, 10))
                                                      for a, b in zip(colbert, colbert_reference)]))
        figures[fmt] = row
    return figures


def wire_bytes(url: str, texts: list[str], fmt: str) -> int:
    """The HTTP response body for `texts` with ColBERT, both vectors in `fmt` (binary tensors)."""
    import httpx
    import tritonclient.http as http

    from bge_m3_client import contract as c

    text = http.InferInput(c.TEXT, [len(texts), 1], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1))
    names = (c.DENSE, c.DENSE_SCALE, c.COLBERT, c.COLBERT_LENGTHS, c.COLBERT_SCALE, c.TOKENS)
    asked = [http.InferRequestedOutput(name, binary_data=True) for name in names]
    parameters = {c.PARAM_MODE: "passage", c.PARAM_DENSE_FORMAT: fmt, c.PARAM_COLBERT_FORMAT: fmt}
    body, header = http.InferenceServerClient.generate_request_body([text], asked, parameters=parameters)
    reply = httpx.post(f"http://{url}/v2/models/{c.EMBED_MODEL}/infer", content=body, timeout=600,
                       headers={"Inference-Header-Content-Length": str(header)} if header else {})
    reply.raise_for_status()
    return len(reply.content)


def throughput(server: Any, gateway_url: str, texts: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Passages/s per format and path, the formats and paths taking turns in each round (medians)."""
    import httpx

    from bge_m3_client import BGEM3Client

    clients = {"client gRPC": BGEM3Client(server.grpc, protocol="grpc", timeout=600),
               "client HTTP": BGEM3Client(server.http, timeout=600)}
    rates: dict[str, dict[str, list[float]]] = {fmt: {} for fmt in formats.FORMATS}
    with httpx.Client(base_url=gateway_url, timeout=600) as gateway:
        for _ in range(rounds):
            for fmt in formats.FORMATS:
                for path, client in clients.items():
                    started = time.perf_counter()
                    client.encode(texts, is_passage=True, return_colbert=True, dense_format=fmt, colbert_format=fmt)
                    rates[fmt].setdefault(path, []).append(len(texts) / (time.perf_counter() - started))
                started = time.perf_counter()
                reply = gateway.post("/v1/m3/embed", json={"texts": texts, "mode": "passage", "return_colbert": True,
                                                           "dense_format": fmt, "colbert_format": fmt})
                reply.raise_for_status()
                rates[fmt].setdefault("gateway /v1/m3/embed", []).append(len(texts) / (time.perf_counter() - started))
    for client in clients.values():
        client.close()
    return {fmt: {path: statistics.median(values) for path, values in by_path.items()}
            for fmt, by_path in rates.items()}


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--encoder", choices=("random", "e5"), default="e5")
    options.add_argument("--passages", type=int, default=300)
    options.add_argument("--queries", type=int, default=40)
    options.add_argument("--throughput", action="store_true")
    options.add_argument("--rounds", type=int, default=3)
    args = options.parse_args()

    from bge_m3_triton.core.m3 import M3Model
    from bge_m3_triton.core.settings import ModelSettings
    from bge_m3_triton.core.tokens import load_tokenizer

    checkpoint, described = encoder_checkpoint(args.encoder, args.preset)
    tokenizer = load_tokenizer(checkpoint)
    passages, queries = corpus(tokenizer, args.passages, args.queries)
    model = M3Model.load(ModelSettings(model=str(checkpoint), dtype="float32", device="cpu", compile="off"))
    encoded_passages = model.encode(passages, [512] * len(passages), ("dense", "colbert"))
    encoded_queries = model.encode(queries, [64] * len(queries), ("dense", "colbert"))
    figures = agreement(np.stack([r.dense for r in encoded_queries]), np.stack([r.dense for r in encoded_passages]),
                        [r.colbert for r in encoded_queries], [r.colbert for r in encoded_passages])
    names = list(dict.fromkeys(name for row in figures.values() for name in row))
    lines = [f"# compact formats against float32 {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             "", f"Machine: {machine()}; agreement on {described}, fp32, {len(queries)} queries over "
                 f"{len(passages)} passages (`python -m perf formats {' '.join(sys.argv[1:])}`).", "",
             "| format | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for fmt, row in figures.items():
        lines.append(f"| {fmt} | " + " | ".join(f"{row[n]:.3f}" if n in row else "—" for n in names) + " |")

    bench = benchmark_checkpoint(args.preset)
    work = work_folder("formats")
    texts = make_texts(load_tokenizer(bench), 32, 256, seed=2)
    server = embed_server(bench, work)
    try:
        sizes = {fmt: wire_bytes(server.http, texts, fmt) for fmt in formats.FORMATS}
        lines += ["", f"Bytes of the HTTP response for 32 passages of ~256 tokens with ColBERT (preset "
                      f"`{args.preset}`, both vectors in the format; binary tensors):", "",
                  "| format | bytes | of float32 |",
                  "|---|---|---|"]
        lines += [f"| {fmt} | {size:,} | {size / sizes['float32']:.3f} |" for fmt, size in sizes.items()]
        if args.throughput:
            from bge_m3_triton.ops.processes import Gateway

            gateway = Gateway(server.grpc, work / "gateway.log")
            try:
                rates = throughput(server, gateway.url, texts, args.rounds)
            finally:
                gateway.stop()
            paths = list(next(iter(rates.values())))
            lines += ["", f"Passages/s, 32 passages with ColBERT per request, median of {args.rounds} rounds:", "",
                      "| format | " + " | ".join(paths) + " |", "|---|" + "---|" * len(paths)]
            lines += [f"| {fmt} | " + " | ".join(f"{by_path[p]:.2f}" for p in paths) + " |"
                      for fmt, by_path in rates.items()]
    finally:
        server.stop()
    publish("\n".join(lines), args.out, f"formats-{args.encoder if args.encoder == 'e5' else args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
