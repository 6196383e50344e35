"""FlagEmbedding, the reference implementation, loaded the way the parity tests compare against it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

TEXTS = [
    "What is BGE M3?",
    "BM25 is a bag-of-words retrieval function that ranks documents by the query terms in each one.",
    "Hello world, 你好世界",
    "東京は日本の首都であり、世界最大級の都市圏を形成している。",
    "مرحبا بالعالم، هذه جملة عربية للاختبار",
    "Привет, мир! Это проверка кириллицы.",
    "emoji 😀🎉👍🏽 and flags 🇫🇷",
    "   ",
    "",
    "the the the the the the the the",
    " ".join(f"word{i} and more text number {i}" for i in range(220)),  # ~1,300 tokens: past the query limit
]
QUERY_MAX, PASSAGE_MAX = 512, 8192
ATOL = 1e-5


@functools.lru_cache(maxsize=4)
def m3(path: str) -> Any:
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(path, use_fp16=False, devices="cpu", query_max_length=QUERY_MAX,
                          passage_max_length=PASSAGE_MAX)


def encode(path: Path, texts: list[str], max_length: int) -> dict[str, Any]:
    """FlagEmbedding's dense, lexical weights and ColBERT vectors for `texts`."""
    return m3(str(path)).encode(texts, max_length=max_length, return_dense=True, return_sparse=True,
                                return_colbert_vecs=True)


def assert_embedding_matches(result: Any, ref: dict[str, Any], index: int, dense: bool = True,
                             sparse: bool = True, colbert: bool = True) -> None:
    """One of our results against the reference's `index`-th text."""
    if dense:
        np.testing.assert_allclose(result.dense, ref["dense_vecs"][index], atol=ATOL, rtol=0)
    if sparse:
        expected = ref["lexical_weights"][index]
        assert result.sparse["indices"] == sorted(int(k) for k in expected)
        np.testing.assert_allclose(result.sparse["values"], [float(expected[str(i)]) for i in result.sparse["indices"]],
                                   atol=ATOL, rtol=0)
    if colbert:
        assert result.colbert.shape == ref["colbert_vecs"][index].shape
        np.testing.assert_allclose(result.colbert, ref["colbert_vecs"][index], atol=ATOL, rtol=0)
