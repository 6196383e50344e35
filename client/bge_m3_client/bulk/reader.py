"""Documents from JSONL, CSV, Parquet or plain text, read as a stream; a malformed record is reported
with its line (or row) number instead of stopping the read."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "csv", "parquet", "text")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv",
             ".parquet": "parquet", ".pq": "parquet"}


@dataclasses.dataclass
class Document:
    """One document: its id, text, where it was read (1-based line or row) and its fields."""

    id: str
    text: str
    line: int
    fields: dict[str, Any]


@dataclasses.dataclass
class Malformed:
    """A record that is not a document, and why."""

    line: int
    reason: str


Record = Document | Malformed


def detect_format(path: Path) -> str:
    """The format from the file's suffix; plain text when it says nothing."""
    return _SUFFIXES.get(path.suffix.lower(), "text")


def count_records(path: Path, fmt: str) -> int | None:
    """How many records the file holds (lines; rows for Parquet), for the progress bar's total."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    count = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return count - 1 if fmt == "csv" and count else count


def read_documents(path: Path, fmt: str, id_field: str = "id", text_field: str = "text") -> Iterator[Record]:
    """Every record of the file in order: a `Document`, or a `Malformed` naming its line and what is wrong.

    JSONL and CSV take the id from `id_field` (the line number when a record has none) and the text
    from `text_field`; plain text is one document a line, its line number the id (empty lines are skipped).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "text":
        yield from _text(path)
    elif fmt == "jsonl":
        yield from _jsonl(path, id_field, text_field)
    elif fmt == "csv":
        yield from _csv(path, id_field, text_field)
    else:
        yield from _parquet(path, id_field, text_field)


def _text(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8", errors="strict", newline="") as handle:
        line = 0
        while True:
            try:
                raw = handle.readline()
            except UnicodeDecodeError as exc:
                yield Malformed(line + 1, f"not UTF-8 ({exc.reason}); the rest of the file cannot be read")
                return
            if not raw:
                return
            line += 1
            text = raw.rstrip("\r\n")
            if text.strip():
                yield Document(str(line), text, line, {"text": text})


def _document(record: Any, line: int, id_field: str, text_field: str) -> Record:
    if not isinstance(record, dict):
        return Malformed(line, f"a record must be an object, got {type(record).__name__}")
    if text_field not in record or record[text_field] is None:
        return Malformed(line, f"no {text_field!r} field")
    text = record[text_field]
    if not isinstance(text, str):
        return Malformed(line, f"{text_field!r} is {type(text).__name__}, not a string")
    raw_id = record.get(id_field, line)
    if raw_id is None:
        raw_id = line
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return Malformed(line, f"{id_field!r} must be a string or an integer, got {type(raw_id).__name__}")
    if str(raw_id) == "":
        return Malformed(line, f"{id_field!r} is empty")
    return Document(str(raw_id), text, line, record)


def _jsonl(path: Path, id_field: str, text_field: str) -> Iterator[Record]:
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield Malformed(line, f"not valid JSON: {exc}")
                continue
            yield _document(record, line, id_field, text_field)


def _csv(path: Path, id_field: str, text_field: str) -> Iterator[Record]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if reader.fieldnames is None:
            return
        if text_field not in reader.fieldnames:
            yield Malformed(1, f"the header has no {text_field!r} column (columns: {', '.join(reader.fieldnames)})")
            return
        for record in reader:
            if None in record:
                yield Malformed(reader.line_num, "more values than the header has columns")
                continue
            yield _document(record, reader.line_num, id_field, text_field)


def _parquet(path: Path, id_field: str, text_field: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    if text_field not in source.schema_arrow.names:
        yield Malformed(1, f"the file has no {text_field!r} column (columns: {', '.join(source.schema_arrow.names)})")
        return
    row = 0
    for batch in source.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield _document(record, row, id_field, text_field)
