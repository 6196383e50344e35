"""BGE-M3 on Ray Data: a callable class for `Dataset.map_batches` that adds the embedding columns.

    import ray
    from bge_m3_client.ray_data import BGEM3Embedder

    ds = ray.data.read_json("corpus.jsonl")
    ds = ds.map_batches(BGEM3Embedder, fn_constructor_kwargs={"urls": ["triton-0:8001", "triton-1:8001"],
                        "protocol": "grpc", "colbert": False}, concurrency=8, num_cpus=0.25,
                        batch_size=256, batch_format="pyarrow")
    ds.write_parquet("s3://bucket/embeddings")

The actors mostly wait on Triton, so give them a fraction of a CPU (`num_cpus=0.25`): with a whole
CPU each they can take every CPU and leave none for the tasks that read the input. Each actor holds
one client against one of `urls` (spread by process id; a Kubernetes Service
address spreads further), and appends the columns `bge-m3-client embed` writes: `dense`,
`sparse_indices`, `sparse_values`, `colbert` (with `colbert=True`), `tokens`, `truncated`.
"""

from __future__ import annotations

import os
from typing import Any

from bge_m3_client.bulk.parquet import embedding_columns
from bge_m3_client.client import BGEM3Client


class BGEM3Embedder:
    """A `map_batches` callable class: one BGE-M3 client per actor (needs `bge-m3-client[bulk,ray]`)."""

    def __init__(self, urls: str | list[str], protocol: str = "grpc", text_column: str = "text",
                 is_passage: bool = True, colbert: bool = False, max_length: int | None = None,
                 retries: int = 3) -> None:
        choices = [urls] if isinstance(urls, str) else list(urls)
        if not choices:
            raise ValueError("urls must name at least one Triton endpoint")
        self.url = choices[os.getpid() % len(choices)]
        self.client = BGEM3Client(self.url, protocol=protocol, retries=retries)
        self.text_column = text_column
        self.is_passage = is_passage
        self.colbert = colbert
        self.max_length = max_length

    def __call__(self, batch: Any) -> Any:
        """A pyarrow Table in (`batch_format="pyarrow"`), the same table with the embedding columns out."""
        texts = batch.column(self.text_column).to_pylist()
        results = self.client.encode(texts, is_passage=self.is_passage, return_dense=True, return_sparse=True,
                                     return_colbert=self.colbert, max_length=self.max_length)
        for name, column in embedding_columns(results, self.colbert).items():
            batch = batch.append_column(name, column)
        return batch
