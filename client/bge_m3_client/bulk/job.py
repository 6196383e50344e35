"""The bulk embedding job: read a corpus as a stream, skip what the output already holds, embed
batches concurrently on one shared client (enough requests in flight for Triton's dynamic batcher),
write what comes back, and account for every document: embedded, already done, failed (with the
error, in the failed file) or malformed (with its line)."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bge_m3_client.bulk.progress import Counts, Progress
from bge_m3_client.bulk.reader import Document, Malformed, count_records, read_documents
from bge_m3_client.client import BGEM3Client
from bge_m3_client.errors import BGEM3Error
from bge_m3_client.results import EmbeddingResult

Rows = list[tuple[Document, EmbeddingResult]]
Failures = list[tuple[Document, str]]

EXIT_OK, EXIT_INCOMPLETE, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 2, 130


class Sink(Protocol):
    """Where embedded documents go: a Parquet dataset or Qdrant."""

    def where(self) -> str: ...
    def pending(self, documents: Sequence[Document]) -> list[Document]: ...
    def write(self, rows: Sequence[tuple[Document, EmbeddingResult]]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@dataclasses.dataclass
class JobOptions:
    """What to embed and how."""

    input: Path
    fmt: str
    failed_path: Path
    id_field: str = "id"
    text_field: str = "text"
    queries: bool = False
    colbert: bool = False
    concurrency: int = 8
    batch_size: int = 64
    max_length: int | None = None
    strict: bool = False
    max_failures: int = 100_000
    dense_format: str = "float32"
    colbert_format: str = "float32"


@dataclasses.dataclass
class Outcome:
    """How a job ended."""

    counts: Counts
    seconds: float
    exit_code: int
    reason: str


class EmbedJob:
    """One run of the job; `run()` returns its outcome (rerun the same job to resume)."""

    def __init__(self, client: BGEM3Client, sink: Sink, options: JobOptions, progress: Progress | None = None) -> None:
        self.client = client
        self.sink = sink
        self.options = options
        self.counts = Counts()
        # The total (for the ETA) costs one extra read of the input, line counting only.
        self.progress = progress or Progress(count_records(options.input, options.fmt))
        self._inflight: set[cf.Future[tuple[Rows, Failures]]] = set()
        self._failed: Any = None

    def run(self) -> Outcome:
        started = time.monotonic()
        options = self.options
        options.failed_path.parent.mkdir(parents=True, exist_ok=True)
        self._failed = options.failed_path.open("w", encoding="utf-8")
        pool = cf.ThreadPoolExecutor(options.concurrency, thread_name_prefix="bge-m3-embed")
        seen: dict[str, int] = {}
        batch: list[Document] = []
        code, reason = EXIT_OK, "done"
        try:
            for record in read_documents(options.input, options.fmt, options.id_field, options.text_field):
                if isinstance(record, Document) and record.id in seen:
                    record = Malformed(record.line, f"duplicate id {record.id!r} (first at line {seen[record.id]})")
                if isinstance(record, Malformed):
                    self._malformed(record)
                    if options.strict:
                        code, reason = EXIT_STOPPED, f"stopped at line {record.line} (--strict): {record.reason}"
                        break
                    continue
                seen[record.id] = record.line
                batch.append(record)
                if len(batch) >= options.batch_size:
                    self._submit(pool, batch)
                    batch = []
                if self.counts.failed >= options.max_failures:
                    code = EXIT_STOPPED
                    reason = f"stopped after {self.counts.failed:,} failed documents (--max-failures)"
                    break
            else:
                if batch:
                    self._submit(pool, batch)
            while self._inflight:
                self._collect(cf.FIRST_COMPLETED)
        except KeyboardInterrupt:
            code, reason = EXIT_INTERRUPTED, "interrupted: rerun the same command to go on where it stopped"
            for future in self._inflight:
                future.cancel()
            self._collect_done()
        finally:
            pool.shutdown(wait=code != EXIT_INTERRUPTED, cancel_futures=True)
            self.sink.close()
            self._failed.close()
            self.progress.close()
        if code == EXIT_OK and (self.counts.failed or self.counts.malformed):
            code, reason = EXIT_INCOMPLETE, f"{self.counts.failed + self.counts.malformed:,} documents not embedded: " \
                                            f"see {options.failed_path}"
        if self.counts.embedded + self.counts.skipped + self.counts.failed + self.counts.malformed == 0 \
                and code == EXIT_OK:
            code, reason = EXIT_INCOMPLETE, f"{options.input} holds no documents"
        return Outcome(self.counts, time.monotonic() - started, code, reason)

    # ---- submitting and collecting ----

    def _submit(self, pool: cf.ThreadPoolExecutor, batch: list[Document]) -> None:
        pending = self.sink.pending(batch)
        skipped = len(batch) - len(pending)
        if skipped:
            self.counts.skipped += skipped
            self.progress.update(self.counts, skipped)
        if not pending:
            return
        while len(self._inflight) >= 2 * self.options.concurrency:  # bounded: memory stays flat
            self._collect(cf.FIRST_COMPLETED)
        self._inflight.add(pool.submit(self._embed, pending))

    def _collect(self, when: str) -> None:
        done, _ = cf.wait(self._inflight, return_when=when)
        for future in done:
            self._inflight.discard(future)
            self._record(*future.result())

    def _collect_done(self) -> None:
        for future in [f for f in self._inflight if f.done() and not f.cancelled()]:
            self._inflight.discard(future)
            try:
                self._record(*future.result())
            except Exception:  # an interrupted batch is redone by the next run
                pass

    def _record(self, rows: Rows, failures: Failures) -> None:
        if rows:
            self.sink.write(rows)
            self.counts.embedded += len(rows)
            self.counts.tokens += sum(r.tokens for _, r in rows)
            self.counts.truncated += sum(r.truncated for _, r in rows)
        for document, error in failures:
            self._write_failed({"id": document.id, "line": document.line, "error": error})
        self.counts.failed += len(failures)
        self.counts.cut_colbert = getattr(self.sink, "cut_colbert", 0)
        self.progress.update(self.counts, len(rows) + len(failures))

    def _malformed(self, record: Malformed) -> None:
        self.counts.malformed += 1
        self._write_failed({"id": None, "line": record.line, "error": f"malformed: {record.reason}"})
        self.progress.update(self.counts, 1)

    def _write_failed(self, entry: dict[str, Any]) -> None:
        self._failed.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._failed.flush()

    # ---- in the worker threads ----

    def _encode(self, documents: Sequence[Document]) -> list[EmbeddingResult]:
        return self.client.encode([d.text for d in documents], is_passage=not self.options.queries,
                                  return_dense=True, return_sparse=True, return_colbert=self.options.colbert,
                                  max_length=self.options.max_length, dense_format=self.options.dense_format,
                                  colbert_format=self.options.colbert_format)

    def _embed(self, documents: list[Document]) -> tuple[Rows, Failures]:
        """Embed a batch; when the server refuses it (not retryable), find the documents at fault one by one."""
        try:
            return list(zip(documents, self._encode(documents))), []
        except BGEM3Error as exc:
            if exc.retryable or len(documents) == 1:
                return [], [(d, f"{type(exc).__name__}: {exc}") for d in documents]
        rows: Rows = []
        failures: Failures = []
        for document in documents:
            try:
                rows.append((document, self._encode([document])[0]))
            except BGEM3Error as exc:
                failures.append((document, f"{type(exc).__name__}: {exc}"))
        return rows, failures
