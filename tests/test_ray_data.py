"""`BGEM3Embedder` in Ray Data's `map_batches` on a local Ray instance (2 CPUs) against a real Triton:
the columns it writes equal the CLI's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import Server
from test_bulk import corpus, write_jsonl

from bge_m3_client.bulk.parquet import read_dataset
from bge_m3_client.cli import main

pytestmark = pytest.mark.e2e


def test_map_batches_writes_what_the_cli_writes(server: Server, tmp_path: Path) -> None:
    import ray

    docs = corpus(60, seed=11)
    source = write_jsonl(tmp_path / "corpus.jsonl", docs)
    assert main(["embed", str(source), "--url", server.grpc, "--protocol", "grpc", "--output",
                 str(tmp_path / "cli"), "--colbert"]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        from bge_m3_client.ray_data import BGEM3Embedder

        dataset = ray.data.read_json(str(source)).map_batches(
            BGEM3Embedder, fn_constructor_kwargs={"urls": [server.grpc], "protocol": "grpc", "colbert": True},
            concurrency=2, num_cpus=0.25, batch_size=16, batch_format="pyarrow")
        dataset.write_parquet(str(tmp_path / "ray"))
    finally:
        ray.shutdown()
    from_ray, from_cli = read_dataset(tmp_path / "ray"), read_dataset(tmp_path / "cli")
    assert set(from_ray) == set(from_cli) == {d["id"] for d in docs}
    for doc_id, row in from_ray.items():
        want = from_cli[doc_id]
        assert row["text"] == next(d["text"] for d in docs if d["id"] == doc_id)  # the input's columns stay
        np.testing.assert_allclose(row["dense"], want["dense"], atol=1e-6)
        np.testing.assert_allclose(row["colbert"], want["colbert"], atol=1e-6)
        assert row["sparse_indices"] == want["sparse_indices"]
        np.testing.assert_allclose(row["sparse_values"], want["sparse_values"], atol=1e-6)
        assert (row["tokens"], row["truncated"]) == (want["tokens"], want["truncated"])
