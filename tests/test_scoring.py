"""BGE-M3's score mixes (core/scoring.py): weighted means, so scale-free, and finite for any finite weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bge_m3_triton.core.scoring import TextVectors, all_scores

RNG = np.random.default_rng(0)


def vectors(tokens: int) -> TextVectors:
    def unit(*shape: int) -> np.ndarray:
        x = RNG.standard_normal(shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    ids = np.sort(RNG.choice(50, size=tokens, replace=False)).astype(np.int64)
    return TextVectors(unit(8), ids, RNG.random(tokens).astype(np.float32), unit(tokens, 8))


QUERY, PASSAGE = vectors(4), vectors(9)


def test_the_mixes_are_the_weighted_means_flagembedding_defines() -> None:
    dense, sparse, colbert, sparse_dense, combined = all_scores(QUERY, PASSAGE, (0.4, 0.2, 0.4))
    assert sparse_dense == pytest.approx((0.2 * sparse + 0.4 * dense) / 0.6, rel=1e-12)
    assert combined == pytest.approx((0.4 * colbert + 0.2 * sparse + 0.4 * dense) / 1.0, rel=1e-12)


@given(st.tuples(*[st.floats(0, 1e308, allow_subnormal=True)] * 3).filter(lambda w: w[0] + w[1] > 0),
       st.floats(1e-300, 1e300))
def test_finite_weights_give_finite_scores_whatever_their_scale(weights: tuple[float, float, float],
                                                                 scale: float) -> None:
    scores = all_scores(QUERY, PASSAGE, weights)
    assert all(math.isfinite(s) for s in scores)
    low, high = min(scores[:3]), max(scores[:3])
    assert all(low - 1e-9 <= mix <= high + 1e-9 for mix in scores[3:])  # a mean lies between its parts
    rescaled = [w * scale for w in weights]
    smallest = min(w for w in weights if w > 0)
    if all(math.isfinite(w) for w in rescaled) and smallest * scale > 1e-290:
        assert np.allclose(all_scores(QUERY, PASSAGE, rescaled)[3:], scores[3:], rtol=1e-9, atol=1e-12)
