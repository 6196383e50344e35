"""BGE-M3's relevance scores between a query and a passage, as FlagEmbedding's `compute_score` defines them.

dense: dot product of the normalized CLS vectors; sparse: sum over shared token ids of
w_query * w_passage; colbert: mean over query vectors of the best dot product with any passage
vector (MaxSim over real tokens). The mixes are weighted means with weights (dense, sparse, colbert).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class TextVectors:
    """One text's three outputs."""

    dense: np.ndarray
    sparse_ids: np.ndarray
    sparse_weights: np.ndarray
    colbert: np.ndarray


def dense_score(query: TextVectors, passage: TextVectors) -> float:
    """Dot product of the dense vectors."""
    return float(np.dot(query.dense, passage.dense))


def sparse_score(query: TextVectors, passage: TextVectors) -> float:
    """Lexical matching: sum of weight products over token ids both texts hold."""
    _, q_at, p_at = np.intersect1d(query.sparse_ids, passage.sparse_ids, assume_unique=True, return_indices=True)
    return float(np.dot(query.sparse_weights[q_at], passage.sparse_weights[p_at]))


def colbert_score(query: TextVectors, passage: TextVectors) -> float:
    """MaxSim: mean over query vectors of their best dot product with a passage vector."""
    if query.colbert.shape[0] == 0 or passage.colbert.shape[0] == 0:
        return 0.0
    return float((query.colbert @ passage.colbert.T).max(axis=1).sum() / query.colbert.shape[0])


def all_scores(query: TextVectors, passage: TextVectors, weights: Sequence[float]) -> list[float]:
    """[dense, sparse, colbert, sparse+dense, colbert+sparse+dense] with weights (dense, sparse, colbert)."""
    dense, sparse, colbert = dense_score(query, passage), sparse_score(query, passage), colbert_score(query, passage)
    w_dense, w_sparse, w_colbert = weights
    sparse_dense = (sparse * w_sparse + dense * w_dense) / (w_sparse + w_dense)
    combined = (colbert * w_colbert + sparse * w_sparse + dense * w_dense) / (w_dense + w_sparse + w_colbert)
    return [dense, sparse, colbert, sparse_dense, combined]
