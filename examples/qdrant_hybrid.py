"""Index passages into Qdrant straight from `BGEM3Client.encode` and run a hybrid query.

Dense and sparse candidates are fetched (prefetch), fused with reciprocal rank fusion, then
rescored with ColBERT MaxSim over the multivector. Nothing is converted on the way in:
`result.sparse` is already Qdrant's `{indices, values}`. One limit needs handling: Qdrant stores at
most 1,048,576 floats in one multivector (qdrant/qdrant#5925), 1,024 of BGE-M3's 1,024-dim ColBERT
vectors, and a passage of up to 8,192 tokens has more; such a passage keeps its first
`colbert_limit(dim)` vectors here (as `bge-m3-client embed --qdrant` does, counting them).
For a whole corpus use `bge-m3-client embed corpus.jsonl --qdrant http://host:6333 --collection c --colbert`.

    python examples/qdrant_hybrid.py --url localhost:8000   # Qdrant in local (in-memory) mode
"""

from __future__ import annotations

import argparse
from typing import Any

from qdrant_client import QdrantClient, models

from bge_m3_client import BGEM3Client
from bge_m3_client.bulk.qdrant import colbert_limit


def run(url: str, passages: list[str], query: str, limit: int = 3, qdrant: QdrantClient | None = None) -> list[Any]:
    """Index `passages`, search with `query`, return Qdrant's scored points best first."""
    qdrant = qdrant or QdrantClient(":memory:")
    with BGEM3Client(url) as client:
        docs = client.encode(passages, is_passage=True, return_colbert=True)
        q = client.encode(query, return_colbert=True)[0]
    dim = len(docs[0].dense)
    qdrant.create_collection("passages", vectors_config={
        "dense": models.VectorParams(size=dim, distance=models.Distance.COSINE),
        "colbert": models.VectorParams(size=docs[0].colbert.shape[1], distance=models.Distance.COSINE,
                                       multivector_config=models.MultiVectorConfig(
                                           comparator=models.MultiVectorComparator.MAX_SIM)),
    }, sparse_vectors_config={"sparse": models.SparseVectorParams()})
    keep = colbert_limit(docs[0].colbert.shape[1])  # what fits one multivector
    qdrant.upsert("passages", points=[
        models.PointStruct(id=i, payload={"text": text, "colbert_cut": len(doc.colbert) > keep}, vector={
            "dense": doc.dense.tolist(), "sparse": models.SparseVector(**doc.sparse),
            "colbert": doc.colbert[:keep].tolist()})
        for i, (text, doc) in enumerate(zip(passages, docs))])
    response = qdrant.query_points(
        "passages",
        prefetch=[models.Prefetch(prefetch=[
            models.Prefetch(query=q.dense.tolist(), using="dense", limit=20),
            models.Prefetch(query=models.SparseVector(**q.sparse), using="sparse", limit=20),
        ], query=models.FusionQuery(fusion=models.Fusion.RRF), limit=20)],
        query=q.colbert.tolist(), using="colbert", limit=limit, with_payload=True)
    return list(response.points)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000")
    args = parser.parse_args()
    texts = ["BGE M3 supports dense, sparse and multi-vector retrieval.", "Triton serves models over HTTP and gRPC.",
             "Qdrant stores vectors and runs hybrid queries."]
    for point in run(args.url, texts, "Which model does hybrid retrieval?"):
        print(f"{point.score:.4f}  {point.payload['text']}")
