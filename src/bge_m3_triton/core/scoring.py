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
    """[dense, sparse, colbert, sparse+dense, colbert+sparse+dense] with weights (dense, sparse, colbert).

    The mixes are weighted means, so only the weights' ratios matter: each mix divides its weights by
    their largest first, which keeps finite weights whose sum would overflow (three of 1e308) from
    giving inf/inf (`contract.check_weights` makes dense + sparse positive)."""
    dense, sparse, colbert = dense_score(query, passage), sparse_score(query, passage), colbert_score(query, passage)
    w_dense, w_sparse, w_colbert = weights
    return [dense, sparse, colbert, _mean((dense, sparse), (w_dense, w_sparse)),
            _mean((dense, sparse, colbert), (w_dense, w_sparse, w_colbert))]


def _mean(scores: Sequence[float], weights: Sequence[float]) -> float:
    largest = max(weights)
    scaled = [w / largest for w in weights]  # the largest becomes 1: the sum stays in [1, 3]
    return sum(s * w for s, w in zip(scores, scaled)) / sum(scaled)
