"""Client pieces without a server: packing, decoding, error mapping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bge_m3_client import contract as c
from bge_m3_client.errors import (
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerUnavailableError,
    classify,
)
from bge_m3_client.packing import chunks, colbert_costs
from bge_m3_client.results import decode_embeddings


@given(st.integers(0, 300), st.integers(0, 80), st.integers(1, 64),
       st.lists(st.integers(1, 100), min_size=300, max_size=300), st.integers(0, 400))
def test_chunks_cover_in_order_within_limits(count: int, batch_size: int, max_batch: int, costs: list[int],
                                             budget: int) -> None:
    ranges = chunks(count, batch_size, max_batch, costs[:count], budget)
    assert [i for a, b in ranges for i in range(a, b)] == list(range(count))
    for a, b in ranges:
        assert 0 < b - a <= min(batch_size or max_batch, max_batch)
        assert b - a == 1 or not budget or sum(costs[a:b]) <= budget


def test_negative_batch_size_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        chunks(3, -1, 64)


def test_colbert_costs_bound_long_passages() -> None:
    long_text = "x" * 100_000
    assert colbert_costs([long_text, "ab"], 8192) == [8192 * 4096, 4 * 4096]


def test_decode_splits_flat_outputs() -> None:
    outputs = {
        c.DENSE: np.eye(2, dtype=np.float32),
        c.SPARSE_INDICES: np.array([5, 9, 7], dtype=np.int32), c.SPARSE_VALUES: np.array([.5, .1, .2], np.float32),
        c.SPARSE_LENGTHS: np.array([[2], [1]], dtype=np.int32),
        c.COLBERT: np.arange(6, dtype=np.float32).reshape(3, 2), c.COLBERT_LENGTHS: np.array([[1], [2]], np.int32),
        c.TOKENS: np.array([[2], [3]], dtype=np.int32), c.TRUNCATED: np.array([[False], [True]]),
    }
    first, second = decode_embeddings(outputs, 2)
    assert first.sparse == {"indices": [5, 9], "values": [0.5, pytest.approx(0.1)]}
    assert second.colbert.tolist() == [[2.0, 3.0], [4.0, 5.0]] and second.truncated and second.tokens == 3
    assert first.lexical_weights() == {"5": 0.5, "9": pytest.approx(0.1)}


@pytest.mark.parametrize(("status", "message", "kind"), [
    ("400", "parameter 'mode' must be ...", InvalidInputError),
    ("StatusCode.INVALID_ARGUMENT", "bad", InvalidInputError),
    ("503", "Exceeds maximum queue size", RequestRejectedError),
    ("503", "anything at all", RequestRejectedError),  # the code decides, not the words
    ("StatusCode.UNAVAILABLE", "Request timeout expired", RequestRejectedError),
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ServerUnavailableError),
    ("400", "Request for unknown model: 'x' is not found", ModelNotReadyError),
    ("StatusCode.NOT_FOUND", "whatever", ModelNotReadyError),
    ("500", "a message saying timeout and unavailable", InferenceError),
    ("StatusCode.INTERNAL", "deadline exceeded in words only", InferenceError),
    ("StatusCode.DEADLINE_EXCEEDED", "", RequestTimeoutError),
    ("418", "an unexpected status", InferenceError),
    (None, "timed out", RequestTimeoutError),
    (None, "Value out of range: 9223372036854775808", InferenceError),  # raised on this side: never retried
    (None, "connection reset", InferenceError),  # connection failures come as OSError or gRPC UNAVAILABLE
])
def test_error_classification(status: str, message: str, kind: type) -> None:
    assert classify(status, message) is kind
