"""A Parquet dataset of part files: one row per document (`id`, `dense`, `sparse_indices`,
`sparse_values`, `colbert` with --colbert, `tokens`, `truncated`), readable as is by pyarrow,
pandas, DuckDB and Spark. The vectors are fixed-size lists of the format asked for (float32, float16,
int8, uint8; the binary formats' packed bytes), with `dense_scale` / `colbert_scale` for int8 and uint8,
and the formats in the schema's metadata (`bge_m3.dense_format`, `bge_m3.colbert_format`).

A part file appears whole or not at all (written under a hidden name, then renamed), so a killed
run leaves only complete parts, and the ids already in them are what a rerun skips.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bge_m3_client import formats
from bge_m3_client.bulk.reader import Document
from bge_m3_client.results import EmbeddingResult

PART_ROWS = 10_000
PART_BYTES = 64 << 20  # a part is written once its buffered vectors reach this size


class ParquetSink:
    """Buffers embedded documents and writes them as part files in `folder`."""

    def __init__(self, folder: Path, colbert: bool, part_rows: int = PART_ROWS, part_bytes: int = PART_BYTES,
                 dense_format: str = formats.FLOAT32, colbert_format: str = formats.FLOAT32) -> None:
        import pyarrow.parquet as pq

        self.folder = folder
        self.colbert = colbert
        self.dense_format = dense_format
        self.colbert_format = colbert_format
        self.part_rows = part_rows
        self.part_bytes = part_bytes
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".part-*.tmp"):  # a part a killed run was writing
            stale.unlink()
        self.done: set[str] = set()
        for part in sorted(folder.glob("part-*.parquet")):
            self.done.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
        self._rows: list[tuple[Document, EmbeddingResult]] = []
        self._bytes = 0
        self._run = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._parts = 0
        self.written = 0

    def where(self) -> str:
        return str(self.folder)

    def pending(self, documents: Sequence[Document]) -> list[Document]:
        """The documents not written yet."""
        return [d for d in documents if d.id not in self.done]

    def write(self, rows: Sequence[tuple[Document, EmbeddingResult]]) -> None:
        """Add embedded documents; a part file is written when the buffer is full."""
        for document, result in rows:
            self._rows.append((document, result))
            self._bytes += sum(a.nbytes for a in (result.dense, result.colbert) if a is not None)
        while len(self._rows) >= self.part_rows:
            self.flush(self.part_rows)
        if self._bytes >= self.part_bytes:
            self.flush()

    def flush(self, rows: int | None = None) -> None:
        """Write the first `rows` buffered documents (all of them by default) as one part file."""
        if not self._rows:
            return
        chunk, rest = self._rows[:rows], self._rows[len(self._rows) if rows is None else rows:]
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids = pa.array([d.id for d, _ in chunk], pa.string())
        table = pa.table({"id": ids, **embedding_columns([r for _, r in chunk], self.colbert)})
        table = table.replace_schema_metadata({"bge_m3.dense_format": self.dense_format,
                                               "bge_m3.colbert_format": self.colbert_format})
        name = f"part-{self._run}-{self._parts:05d}.parquet"
        temporary = self.folder / f".{name}.tmp"
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, self.folder / name)
        self._parts += 1
        self.written += len(chunk)
        self.done.update(d.id for d, _ in chunk)
        self._rows = rest
        self._bytes = sum(a.nbytes for _, r in rest for a in (r.dense, r.colbert) if a is not None)

    def close(self) -> None:
        self.flush()


def embedding_columns(results: Sequence[EmbeddingResult], colbert: bool) -> dict[str, Any]:
    """Arrow columns of embedding results: `dense` (fixed-size list of the dense format's type, and
    `dense_scale` with int8 and uint8), `sparse_indices`, `sparse_values`, `colbert` (list of fixed-size
    lists, and `colbert_scale`) when asked, `tokens`, `truncated`."""
    import pyarrow as pa

    first = results[0] if results else EmbeddingResult(None, None, None, 0, False)
    value = pa.from_numpy_dtype(np.dtype(formats.NUMPY_DTYPES[first.dense_format]))
    dims = {r.dense.shape[0] for r in results if r.dense is not None}
    dense_type = pa.list_(value, dims.pop()) if len(dims) == 1 else pa.list_(value)
    columns: dict[str, Any] = {"dense": pa.array([r.dense for r in results], dense_type)}
    if first.dense_format in formats.SCALED:
        columns["dense_scale"] = pa.array([r.dense_scale for r in results], pa.float32())
    columns["sparse_indices"] = pa.array([(r.sparse or {}).get("indices", []) for r in results], pa.list_(pa.int32()))
    columns["sparse_values"] = pa.array([(r.sparse or {}).get("values", []) for r in results], pa.list_(pa.float32()))
    if colbert:
        value = pa.from_numpy_dtype(np.dtype(formats.NUMPY_DTYPES[first.colbert_format]))
        widths = {r.colbert.shape[1] for r in results if r.colbert is not None and r.colbert.size}
        inner = pa.list_(value, widths.pop()) if len(widths) == 1 else pa.list_(value)
        columns["colbert"] = pa.array([list(r.colbert) if r.colbert is not None else [] for r in results],
                                      pa.list_(inner))
        if first.colbert_format in formats.SCALED:
            columns["colbert_scale"] = pa.array(
                [r.colbert_scale.reshape(-1) if r.colbert_scale is not None else [] for r in results],
                pa.list_(pa.float32()))
    columns["tokens"] = pa.array([r.tokens for r in results], pa.int32())
    columns["truncated"] = pa.array([r.truncated for r in results], pa.bool_())
    return columns


def read_dataset(folder: Path) -> dict[str, dict[str, Any]]:
    """Rows of a dataset written by `ParquetSink`, by id (numpy arrays for the vectors, of the type stored)."""
    import pyarrow.parquet as pq

    table = pq.read_table(folder)

    def value_dtype(name: str) -> np.dtype:
        kind = table.schema.field(name).type
        while hasattr(kind, "value_type"):
            kind = kind.value_type
        return np.dtype(kind.to_pandas_dtype())

    out = {}
    for row in table.to_pylist():
        row["dense"] = np.asarray(row["dense"], dtype=value_dtype("dense"))
        if "colbert" in row:
            row["colbert"] = np.asarray(row["colbert"], dtype=value_dtype("colbert"))
        out[row["id"]] = row
    return out
