"""Our encode results go into Qdrant (local mode) untransformed: dense, sparse, ColBERT multivector, hybrid query."""

from __future__ import annotations

import pytest
from conftest import Server

pytestmark = pytest.mark.server


def test_hybrid_search_in_qdrant(server: Server) -> None:
    from examples import qdrant_hybrid

    passages = ["BGE M3 is a multilingual embedding model.", "Paris is the capital of France.",
                "東京は日本の首都です。", "Dense, sparse and multi-vector retrieval in one model."]
    hits = qdrant_hybrid.run(server.http, passages, passages[1], limit=3)
    assert len(hits) == 3
    assert hits[0].payload["text"] == passages[1]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
