"""`bge-m3-client embed` against a real Triton: every input format, Parquet and Qdrant outputs equal to
`encode`, malformed records, resuming after SIGINT and SIGKILL, a server stopped mid-run, flat memory."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Server, start_server

from bge_m3_client import BGEM3Client
from bge_m3_client.bulk.parquet import read_dataset
from bge_m3_client.bulk.qdrant import colbert_limit, point_id
from bge_m3_client.cli import main

pytestmark = pytest.mark.server

WORDS = ["search", "retrieval", "multilingual", "passage", "dense", "sparse", "vector", "index", "query", "model",
         "token", "lexical"]


def corpus(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"id": f"doc-{i}", "text": " ".join(rng.choice(WORDS, int(rng.integers(3, 40)))), "lang": "en"}
            for i in range(count)]


def write_jsonl(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def cli(tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bge_m3_client.cli", "embed", *args]
    with (tmp / "stdout.txt").open("wb") as stdout, (tmp / "stderr.txt").open("wb") as stderr:
        return subprocess.Popen(command, stdout=stdout, stderr=stderr)  # the child keeps its own descriptors


def assert_matches_encode(server: Server, docs: list[dict[str, Any]], rows: dict[str, dict[str, Any]],
                          colbert: bool = False) -> None:
    assert set(rows) == {d["id"] for d in docs}
    with BGEM3Client(server.http) as client:
        expected = client.encode([d["text"] for d in docs], is_passage=True, return_colbert=colbert)
    for doc, want in zip(docs, expected):
        row = rows[doc["id"]]
        np.testing.assert_allclose(row["dense"], want.dense, atol=1e-6)
        assert row["sparse_indices"] == want.sparse["indices"]
        np.testing.assert_allclose(row["sparse_values"], want.sparse["values"], atol=1e-6)
        assert (row["tokens"], row["truncated"]) == (want.tokens, want.truncated)
        if colbert:
            np.testing.assert_allclose(row["colbert"], want.colbert, atol=1e-6)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "text"])
def test_every_input_format_gives_what_encode_gives(server: Server, tmp_path: Path, fmt: str) -> None:
    docs = corpus(40)
    source = tmp_path / f"corpus.{'txt' if fmt == 'text' else fmt}"
    if fmt == "jsonl":
        write_jsonl(source, docs)
    elif fmt == "csv":
        with source.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "text", "lang"])
            writer.writeheader()
            writer.writerows(docs)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(docs), source)
    else:
        source.write_text("".join(d["text"] + "\n" for d in docs), encoding="utf-8")
        docs = [{**d, "id": str(i + 1)} for i, d in enumerate(docs)]  # plain text: the line number is the id
    out = tmp_path / "out"
    code = main(["embed", str(source), "--url", server.grpc, "--protocol", "grpc", "--output", str(out),
                 "--colbert", "--batch-size", "7", "--part-rows", "16"])
    assert code == 0
    assert len(list(out.glob("part-*.parquet"))) == 3  # 40 documents, 16 a part
    assert_matches_encode(server, docs, read_dataset(out), colbert=True)
    assert (out / "_failed.jsonl").read_text() == ""
    # readable as is by pyarrow's dataset reader and pandas
    assert pq.ParquetDataset(out).read().num_rows == 40
    assert len(pq.read_table(out).to_pandas()) == 40


def test_qdrant_edge_and_local_mode_hold_what_encode_gives(server: Server, tmp_path: Path) -> None:
    from qdrant_client import QdrantClient
    from qdrant_edge import EdgeShard

    docs = corpus(25, seed=3)
    source = write_jsonl(tmp_path / "corpus.jsonl", docs)
    with BGEM3Client(server.http) as client:
        expected = {d["id"]: r for d, r in zip(docs, client.encode([d["text"] for d in docs], is_passage=True,
                                                                 return_colbert=True))}
    limit = 5  # a ColBERT limit below most documents' length exercises the cut Qdrant's cap needs
    assert main(["embed", str(source), "--url", server.http, "--qdrant", f"edge:{tmp_path / 'shard'}", "--colbert",
                 "--colbert-max-vectors", str(limit)]) == 0
    shard = EdgeShard.load(str(tmp_path / "shard"))
    records = shard.retrieve([point_id(d["id"]) for d in docs], True, True)
    shard.close()
    assert len(records) == 25
    for record in records:
        want = expected[record.payload["doc_id"]]
        assert record.payload["lang"] == "en"
        np.testing.assert_allclose(record.vector["dense"], want.dense, atol=1e-5)
        assert list(record.vector["sparse"].indices) == want.sparse["indices"]
        np.testing.assert_allclose(record.vector["colbert"], want.colbert[:limit], atol=1e-5)

    folder = tmp_path / "local"
    assert main(["embed", str(source), "--url", server.http, "--qdrant", str(folder), "--collection", "docs",
                 "--colbert", "--failed", str(tmp_path / "failed.jsonl")]) == 0
    client = QdrantClient(path=str(folder))
    try:
        points = client.retrieve("docs", [point_id(d["id"]) for d in docs], with_vectors=True, with_payload=True)
        assert len(points) == 25
        for point in points:
            want = expected[point.payload["doc_id"]]
            np.testing.assert_allclose(point.vector["dense"], want.dense, atol=1e-5)
            assert point.vector["sparse"].indices == want.sparse["indices"]
            assert len(point.vector["colbert"]) == len(want.colbert)
        info = client.get_collection("docs").config.params
        assert info.vectors["colbert"].multivector_config.comparator.value == "max_sim"
    finally:
        client.close()


def test_colbert_limit_fits_qdrants_multivector_cap() -> None:
    assert colbert_limit(1024) == 1024 and colbert_limit(32) == 32_768 and colbert_limit(1024, 100) == 100
    assert colbert_limit(1024) * 1024 <= 1_048_576 < (colbert_limit(1024) + 1) * 1024


def test_malformed_records_are_reported_with_their_lines(server: Server, tmp_path: Path) -> None:
    lines = ['{"id": "a", "text": "fine"}', "{not json", '{"id": "b"}', '{"id": "c", "text": 42}', "",
             '{"id": "a", "text": "again"}', '["a list"]', '{"id": "d", "text": "fine too"}']
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["embed", str(source), "--url", server.http, "--output", str(out)]) == 1
    failed = [json.loads(line) for line in (out / "_failed.jsonl").read_text().splitlines()]
    assert [(f["line"], f["error"].split(":")[0]) for f in failed] == [(2, "malformed")] * 1 + [
        (3, "malformed"), (4, "malformed"), (6, "malformed"), (7, "malformed")]
    reasons = " | ".join(f["error"] for f in failed)
    for words in ("not valid JSON", "no 'text' field", "'text' is int, not a string", "duplicate id 'a'",
                  "must be an object"):
        assert words in reasons
    assert set(read_dataset(out)) == {"a", "d"}
    strict = tmp_path / "strict"
    assert main(["embed", str(source), "--url", server.http, "--output", str(strict), "--strict"]) == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["embed", str(empty), "--url", server.http, "--output", str(tmp_path / "e")]) == 1


def wait_for_part(folder: Path, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(folder.glob("part-*.parquet")):
        assert process.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_run_resumes_with_every_id_once(server: Server, tmp_path: Path, stop: signal.Signals) -> None:
    total = 4000  # enough that the job cannot finish between its first part file and the signal
    docs = corpus(total, seed=5)
    source = write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "out"
    args = [str(source), "--url", server.grpc, "--protocol", "grpc", "--output", str(out), "--batch-size", "8",
            "--concurrency", "2", "--part-rows", "40"]
    first = cli(tmp_path, *args)
    wait_for_part(out, first)
    first.send_signal(stop)
    code = first.wait(60)
    assert code == (130 if stop == signal.SIGINT else -signal.SIGKILL)
    assert not list(out.glob(".*.tmp")) or stop == signal.SIGKILL  # SIGINT leaves only whole part files
    done_before = pq.read_table(out, columns=["id"]).num_rows
    assert 0 < done_before < total
    second = cli(tmp_path, *args)
    assert second.wait(300) == 0, (tmp_path / "stderr.txt").read_text()
    summary = json.loads((tmp_path / "stdout.txt").read_text())
    assert summary["skipped"] == done_before and summary["embedded"] == total - done_before
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(d["id"] for d in docs)  # every id exactly once


def test_a_server_stopped_mid_run_leaves_nothing_silently_missing(tmp_path: Path, m3_checkpoint: Path) -> None:
    running = start_server(tmp_path, ["--model", str(m3_checkpoint), "--dtype", "float32", "--models", "bge_m3"],
                           ["bge_m3"])
    docs = corpus(600, seed=7)
    source = write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "out"
    job = cli(tmp_path, str(source), "--url", running.grpc, "--protocol", "grpc", "--output", str(out),
              "--batch-size", "8", "--concurrency", "2", "--part-rows", "40", "--retries", "2")
    try:
        wait_for_part(out, job)
    finally:
        running.stop()
    assert job.wait(300) == 1, (tmp_path / "stderr.txt").read_text()
    embedded = set(pq.read_table(out, columns=["id"]).column("id").to_pylist())
    failed = [json.loads(line) for line in (out / "_failed.jsonl").read_text().splitlines()]
    failed_ids = {f["id"] for f in failed}
    assert failed and not embedded & failed_ids
    assert embedded | failed_ids == {d["id"] for d in docs}
    # the stopping server refused new requests, then unloaded the model, then could not be reached
    assert all(f["error"].startswith(("ServerUnavailableError", "ModelNotReadyError", "RequestRejectedError"))
               for f in failed)
    summary = json.loads((tmp_path / "stdout.txt").read_text())
    assert summary["failed"] == len(failed) and summary["embedded"] == len(embedded)


def test_memory_stays_flat_on_a_large_corpus(server: Server, tmp_path: Path) -> None:
    """The job's peak memory does not grow with the corpus: 20,000 documents peak within the bound of 2,000
    (the job reports its own peak resident memory, so nothing here depends on when it is sampled)."""
    def peak_mib(documents: int) -> float:
        folder = tmp_path / str(documents)
        folder.mkdir()
        source = folder / "corpus.txt"
        source.write_text("".join(f"line {i} " + " ".join(WORDS[: i % 12 + 1]) + "\n" for i in range(documents)))
        job = cli(folder, str(source), "--url", server.grpc, "--protocol", "grpc", "--output", str(folder / "out"),
                  "--part-rows", "2000")
        assert job.wait(600) == 0, (folder / "stderr.txt").read_text()
        summary = json.loads((folder / "stdout.txt").read_text())
        assert summary["embedded"] == documents
        return float(summary["peak_rss_mib"])

    small, large = peak_mib(2_000), peak_mib(20_000)
    print(f"job peak RSS: {small:.0f} MiB for 2,000 documents, {large:.0f} MiB for 20,000")
    assert large - small < 60, (small, large)


def test_compact_formats_into_parquet_and_qdrant_edge_read_back_as_served(server: Server, tmp_path: Path) -> None:
    """--colbert-format float16 (and an int8 dense vector) into Parquet, float16 ColBERT and uint8 dense into
    Qdrant Edge: read back, the vectors are the ones the server gives in those formats; the float16 ColBERT
    column takes half float32's bytes."""
    from qdrant_edge import EdgeShard


    docs = corpus(24, seed=11)
    source = write_jsonl(tmp_path / "corpus.jsonl", docs)
    with BGEM3Client(server.grpc, protocol="grpc") as client:
        texts = [d["text"] for d in docs]
        served = dict(zip((d["id"] for d in docs), client.encode(
            texts, is_passage=True, return_colbert=True, dense_format="int8", colbert_format="float16")))
        unsigned = dict(zip((d["id"] for d in docs), client.encode(
            texts, is_passage=True, return_colbert=True, dense_format="uint8", colbert_format="float16")))
    common = ["--url", server.grpc, "--protocol", "grpc", "--colbert", "--colbert-format", "float16"]
    out = tmp_path / "parquet"
    assert main(["embed", str(source), *common, "--dense-format", "int8", "--output", str(out)]) == 0
    rows = read_dataset(out)
    for doc_id, want in served.items():
        assert rows[doc_id]["dense"].dtype == np.int8 and rows[doc_id]["colbert"].dtype == np.float16
        np.testing.assert_array_equal(rows[doc_id]["dense"], want.dense)
        assert rows[doc_id]["dense_scale"] == pytest.approx(want.dense_scale)
        np.testing.assert_array_equal(rows[doc_id]["colbert"], want.colbert)
    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    assert schema.metadata[b"bge_m3.colbert_format"] == b"float16"
    full = tmp_path / "parquet-float32"
    assert main(["embed", str(source), "--url", server.grpc, "--protocol", "grpc", "--colbert", "--output",
                 str(full)]) == 0

    def colbert_bytes(folder: Path) -> int:
        return pq.read_table(folder, columns=["colbert"]).column("colbert").nbytes

    assert colbert_bytes(out) <= 0.55 * colbert_bytes(full)

    shard_path = tmp_path / "shard"
    assert main(["embed", str(source), *common, "--dense-format", "uint8", "--qdrant", f"edge:{shard_path}"]) == 0
    shard = EdgeShard.load(str(shard_path))
    records = shard.retrieve([point_id(d["id"]) for d in docs], True, True)
    shard.close()
    assert len(records) == len(docs)
    for record in records:
        want = unsigned[record.payload["doc_id"]]
        np.testing.assert_array_equal(np.asarray(record.vector["dense"]), want.dense.astype(np.float32))
        np.testing.assert_array_equal(np.asarray(record.vector["colbert"], dtype=np.float16), want.colbert)
    with pytest.raises(SystemExit, match="no int8 datatype|uint8"):
        main(["embed", str(source), *common, "--dense-format", "int8", "--qdrant", f"edge:{tmp_path / 'other'}"])
