"""Qdrant as the job's output: a collection (or an embedded Qdrant Edge shard) with the named vectors
`dense`, sparse `sparse` and, with --colbert, the multivector `colbert` (MAX_SIM), created when missing.

Point ids are UUIDv5 of the document id (Qdrant takes only integers and UUIDs); the document's fields
are the payload, with its id under `doc_id`. Qdrant stores at most 1,048,576 floats in one multivector
(qdrant/qdrant#5925), 1,024 ColBERT vectors of BGE-M3's 1,024 dims: a longer passage keeps its first
`colbert_max_vectors` vectors, and the job counts the documents cut so.

The vectors' format (docs/formats.md) picks how Qdrant stores them: float16 and uint8 as its `float16`
and `uint8` datatypes (half and a quarter of float32's space; uint8's values as served, int8 + 128),
binary and ubinary as their signs (+1/-1) under binary quantization (one bit per dimension in memory,
the originals on disk). Qdrant has no int8 datatype: int8 is refused, uint8 is its equivalent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from bge_m3_client import formats
from bge_m3_client.bulk.reader import Document
from bge_m3_client.results import EmbeddingResult

MULTIVECTOR_FLOATS = 1_048_576
NAMESPACE = uuid.UUID("6b1f6b8e-3c6a-5d5e-9a55-0b9e3f1c2a10")


def point_id(document_id: str) -> str:
    """The Qdrant point id of a document id (stable across runs)."""
    return str(uuid.uuid5(NAMESPACE, document_id))


def colbert_limit(dim: int, requested: int | None = None) -> int:
    """How many ColBERT vectors of `dim` floats one multivector may hold (or fewer, when asked)."""
    cap = MULTIVECTOR_FLOATS // dim
    return min(cap, requested) if requested else cap


class Storage:
    """How a format's vectors are stored in Qdrant: a datatype (None: float32), binary quantization or not."""

    def __init__(self, fmt: str, what: str) -> None:
        if fmt == formats.INT8:
            raise ValueError(f"Qdrant stores float32, float16 or uint8 vectors: use --{what}-format uint8 (int8 "
                             "+ 128, the same values shifted) or float16")
        self.fmt = fmt
        self.datatype = {formats.FLOAT16: "float16", formats.UINT8: "uint8"}.get(fmt)
        self.binary = fmt in formats.PACKED

    def values(self, vectors: np.ndarray) -> list[Any]:
        """The numbers to upsert: as served, or the signs of the packed bits."""
        if self.binary:
            return formats.decode(vectors, self.fmt).tolist()  # type: ignore[no-any-return]
        if self.fmt == formats.UINT8:
            return vectors.astype(np.int32).tolist()  # type: ignore[no-any-return]
        return vectors.astype(np.float32).tolist()  # type: ignore[no-any-return]

    def size(self, width: int) -> int:
        """The vector size Qdrant holds for a served width (the packed formats' eight dimensions a byte)."""
        return width * 8 if self.binary else width


class _QdrantBase:
    def __init__(self, collection: str, colbert: bool, colbert_max_vectors: int | None,
                 dense_format: str = formats.FLOAT32, colbert_format: str = formats.FLOAT32) -> None:
        self.collection = collection
        self.colbert = colbert
        self.colbert_max_vectors = colbert_max_vectors
        self.dense_storage = Storage(dense_format, "dense")
        self.colbert_storage = Storage(colbert_format, "colbert")
        self.cut_colbert = 0  # documents whose ColBERT vectors were cut to the limit
        self.written = 0
        self._ready = False

    def _vectors(self, result: EmbeddingResult) -> tuple[list[Any], list[int], list[float], list[Any] | None]:
        assert result.dense is not None and result.sparse is not None
        colbert = None
        if self.colbert and result.colbert is not None:
            limit = colbert_limit(self.colbert_storage.size(result.colbert.shape[1]), self.colbert_max_vectors)
            if result.colbert.shape[0] > limit:
                self.cut_colbert += 1
            colbert = self.colbert_storage.values(result.colbert[:limit])
        return self.dense_storage.values(result.dense), result.sparse["indices"], result.sparse["values"], colbert

    def _points(self, rows: Sequence[tuple[Document, EmbeddingResult]], sparse: Any, point: Any) -> list[Any]:
        """Points for `rows`, built with the engine's sparse-vector and point constructors."""
        points = []
        for document, result in rows:
            dense, indices, values, colbert = self._vectors(result)
            vector: dict[str, Any] = {"dense": dense, "sparse": sparse(indices, values)}
            if colbert is not None:
                vector["colbert"] = colbert
            points.append(point(point_id(document.id), vector, {**document.fields, "doc_id": document.id}))
        return points

    def _widths(self, rows: Sequence[tuple[Document, EmbeddingResult]]) -> tuple[int, int]:
        first = rows[0][1]
        return (self.dense_storage.size(first.dense.shape[0]) if first.dense is not None else 0,
                self.colbert_storage.size(first.colbert.shape[1]) if first.colbert is not None else 0)

    def flush(self) -> None:
        """Points are written as they come; nothing is buffered."""


class QdrantSink(_QdrantBase):
    """A Qdrant server (`http://...`) or qdrant-client's local mode (a folder, or `:memory:`)."""

    def __init__(self, location: str, collection: str, colbert: bool, colbert_max_vectors: int | None = None,
                 client: Any = None, dense_format: str = formats.FLOAT32,
                 colbert_format: str = formats.FLOAT32) -> None:
        super().__init__(collection, colbert, colbert_max_vectors, dense_format, colbert_format)
        from qdrant_client import QdrantClient

        self.location = location
        if client is not None:
            self.client = client
        elif location.startswith(("http://", "https://")):
            self.client = QdrantClient(url=location)
        else:
            self.client = QdrantClient(location=":memory:") if location == ":memory:" else QdrantClient(path=location)

    def where(self) -> str:
        return f"{self.location} collection {self.collection!r}"

    def _ensure(self, dense_dim: int, colbert_dim: int) -> None:
        if self._ready:
            return
        from qdrant_client import models

        if not self.client.collection_exists(self.collection):
            def params(size: int, storage: Storage, multivector: Any = None) -> Any:
                return models.VectorParams(
                    size=size, distance=models.Distance.COSINE, multivector_config=multivector,
                    datatype=models.Datatype(storage.datatype) if storage.datatype else None,
                    on_disk=True if storage.binary else None,
                    quantization_config=models.BinaryQuantization(binary=models.BinaryQuantizationConfig(
                        always_ram=True)) if storage.binary else None)

            vectors = {"dense": params(dense_dim, self.dense_storage)}
            if self.colbert:
                vectors["colbert"] = params(colbert_dim, self.colbert_storage, models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM))
            self.client.create_collection(self.collection, vectors_config=vectors,
                                          sparse_vectors_config={"sparse": models.SparseVectorParams()})
        self._ready = True

    def pending(self, documents: Sequence[Document]) -> list[Document]:
        if not self.client.collection_exists(self.collection):
            return list(documents)
        found = {str(r.id) for r in self.client.retrieve(self.collection, [point_id(d.id) for d in documents],
                                                           with_payload=False, with_vectors=False)}
        return [d for d in documents if point_id(d.id) not in found]

    def write(self, rows: Sequence[tuple[Document, EmbeddingResult]]) -> None:
        from qdrant_client import models

        if not rows:
            return
        self._ensure(*self._widths(rows))
        points = self._points(rows, lambda i, v: models.SparseVector(indices=i, values=v),
                              lambda i, v, p: models.PointStruct(id=i, vector=v, payload=p))
        self.client.upsert(self.collection, points=points, wait=True)
        self.written += len(points)

    def close(self) -> None:
        self.client.close()


class EdgeSink(_QdrantBase):
    """Qdrant Edge, Qdrant's embedded engine (`qdrant-edge-py`): a shard in a local folder (`edge:PATH`)."""

    def __init__(self, path: str, colbert: bool, colbert_max_vectors: int | None = None,
                 dense_format: str = formats.FLOAT32, colbert_format: str = formats.FLOAT32) -> None:
        super().__init__("edge", colbert, colbert_max_vectors, dense_format, colbert_format)
        import qdrant_edge

        self.edge = qdrant_edge
        self.path = path
        self.shard: Any = None
        try:
            self.shard = qdrant_edge.EdgeShard.load(path)
        except Exception:  # no shard there yet: made on the first write, when the widths are known
            self.shard = None

    def where(self) -> str:
        return f"Qdrant Edge shard {self.path}"

    def _ensure(self, dense_dim: int, colbert_dim: int) -> None:
        if self.shard is not None:
            return
        e = self.edge
        datatypes = {"float16": e.VectorStorageDatatype.Float16, "uint8": e.VectorStorageDatatype.Uint8}

        def params(size: int, storage: Storage, multivector: Any = None) -> Any:
            return e.EdgeVectorParams(size=size, distance=e.Distance.Cosine, multivector_config=multivector,
                                      datatype=datatypes.get(storage.datatype or ""),
                                      on_disk=True if storage.binary else None,
                                      quantization_config=e.BinaryQuantizationConfig(always_ram=True)
                                      if storage.binary else None)

        vectors = {"dense": params(dense_dim, self.dense_storage)}
        if self.colbert:
            vectors["colbert"] = params(colbert_dim, self.colbert_storage,
                                        e.MultiVectorConfig(e.MultiVectorComparator.MaxSim))
        self.shard = e.EdgeShard.create(self.path, e.EdgeConfig(vectors=vectors,
                                                                 sparse_vectors={"sparse": e.EdgeSparseVectorParams()}))

    def pending(self, documents: Sequence[Document]) -> list[Document]:
        if self.shard is None:
            return list(documents)
        found = {str(r.id) for r in self.shard.retrieve([point_id(d.id) for d in documents], False, False)}
        return [d for d in documents if point_id(d.id) not in found]

    def write(self, rows: Sequence[tuple[Document, EmbeddingResult]]) -> None:
        if not rows:
            return
        self._ensure(*self._widths(rows))
        e = self.edge
        points = self._points(rows, e.SparseVector, e.Point)
        self.shard.update(e.UpdateOperation.upsert_points(points))
        self.shard.flush()
        self.written += len(points)

    def close(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
