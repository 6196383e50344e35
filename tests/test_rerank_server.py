"""The rerank models inside a real Triton server, against FlagEmbedding's compute_score and FlagReranker."""

from __future__ import annotations

import asyncio
import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as http
from conftest import Server
from reference import TEXTS, m3
from tritonclient.utils import InferenceServerException

from bge_m3_client import AsyncBGEM3Client, BGEM3Client, InvalidInputError

pytestmark = pytest.mark.server

ATOL = 1e-5
QUERY = "What is BGE M3? A multilingual embedding model"
PASSAGES = [t for t in TEXTS if t.strip()] + ["BGE M3 is a multilingual embedding model from BAAI"]
MODES = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")


def reference_scores(path: Path, pairs: list[tuple[str, str]], weights: list[float], max_q: int,
                     max_p: int) -> list[dict[str, float]]:
    """FlagEmbedding's compute_score, one pair at a time.

    In a padded batch its ColBERT MaxSim also sees the zero vectors of padding positions (a query
    vector whose best real match is negative then scores 0); one pair at a time has no padding, so
    this is the MaxSim over real tokens that we compute.
    """
    model = m3(str(path))
    scores = [model.compute_score([pair], max_query_length=max_q, max_passage_length=max_p,
                                  weights_for_different_modes=weights) for pair in pairs]
    return [{mode: float(values[mode][0]) for mode in MODES} for values in scores]


@pytest.mark.parametrize(("weights", "max_q", "max_p"), [
    ([0.4, 0.2, 0.4], 256, 5000),  # the FastAPI sketch's settings
    ([1.0, 1.0, 1.0], 512, 8192),
    ([0.1, 0.7, 0.2], 8, 16),
])
def test_combined_scores_match_compute_score(server: Server, m3_checkpoint: Path, weights: list[float],
                                             max_q: int, max_p: int) -> None:
    expected = reference_scores(m3_checkpoint, [(QUERY, p) for p in PASSAGES], weights, max_q, max_p)
    with BGEM3Client(server.http) as client:
        ours = client.score(QUERY, PASSAGES, weights=weights, max_query_length=max_q, max_passage_length=max_p)
    for got, want in zip(ours, expected):
        for mode in MODES:
            assert got[mode] == pytest.approx(float(want[mode]), abs=ATOL), mode


def test_sentence_pairs_and_concurrent_requests_batch_together(server: Server, m3_checkpoint: Path) -> None:
    pairs = [(TEXTS[i], TEXTS[-1 - i]) for i in range(len(TEXTS))]
    expected = reference_scores(m3_checkpoint, pairs, [0.4, 0.2, 0.4], 512, 8192)
    with BGEM3Client(server.grpc, protocol="grpc") as client:
        one_at_a_time = [client.score_pairs([pair])[0] for pair in pairs]

    async def together() -> list[list[dict[str, float]]]:
        async with AsyncBGEM3Client(server.http) as client:
            return await asyncio.gather(*(client.score(q, [p]) for q, p in pairs))

    concurrent = [scores[0] for scores in asyncio.run(together())]
    for single, batched, want in zip(one_at_a_time, concurrent, expected):
        for mode in MODES:
            assert single[mode] == pytest.approx(float(want[mode]), abs=ATOL)
            assert batched[mode] == pytest.approx(single[mode], abs=1e-6)


@functools.lru_cache(maxsize=1)
def flag_reranker(path: str) -> Any:
    from FlagEmbedding import FlagReranker

    return FlagReranker(path, use_fp16=False, devices="cpu")


@pytest.mark.parametrize("normalize", [True, False])
def test_cross_encoder_matches_flag_reranker(server: Server, reranker_checkpoint: Path, normalize: bool) -> None:
    pairs = [[QUERY, p] for p in PASSAGES]
    expected = flag_reranker(str(reranker_checkpoint)).compute_score(pairs, normalize=normalize)
    with BGEM3Client(server.http) as client:
        ranked = client.rerank(QUERY, PASSAGES, normalize=normalize)
    assert sorted(i for i, _ in ranked) == list(range(len(PASSAGES)))
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    for index, score in ranked:
        assert score == pytest.approx(expected[index], abs=ATOL)
        if normalize:
            assert 0.0 < score < 1.0


def test_rerank_top_n_and_model_choice(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        top = client.rerank(QUERY, PASSAGES, top_n=2, model="bge_m3_rerank")
        combined = [s["colbert+sparse+dense"] for s in client.score(QUERY, PASSAGES)]
        assert client.rerank(QUERY, []) == []
    assert len(top) == 2
    assert [i for i, _ in top] == list(np.argsort(combined)[::-1][:2])


@pytest.mark.parametrize("weights", [[math.nan, 0.2, 0.4], [-1.0, 0.2, 0.4], [0.4, 0.2], [0.0, 0.0, 1.0]])
def test_invalid_weights_are_per_request_errors(server: Server, weights: list[float]) -> None:
    raw = http.InferenceServerClient(server.http)
    inputs = []
    for name in ("QUERY", "PASSAGE"):
        tensor = http.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"q"], dtype=object).reshape(1, 1))
        inputs.append(tensor)
    parameters: dict[str, Any] = dict(zip(("dense_weight", "sparse_weight", "colbert_weight"), weights))
    if any(math.isnan(w) for w in weights):
        parameters = {"dense_weight": "nan"}
    if len(weights) == 2:
        parameters["colbert_weight"] = "0.4"
    with pytest.raises(Exception, match="weight"):
        raw.infer("bge_m3_rerank", inputs, parameters=parameters)
    with BGEM3Client(server.http) as client, pytest.raises(InvalidInputError, match="weight"):
        client.score("q", ["p"], weights=weights)


def test_mismatched_pairs_and_empty_lists(server: Server) -> None:
    raw = http.InferenceServerClient(server.http)
    query = http.InferInput("QUERY", [1, 1], "BYTES")
    query.set_data_from_numpy(np.array([b"q"], dtype=object).reshape(1, 1))
    passages = http.InferInput("PASSAGE", [2, 1], "BYTES")
    passages.set_data_from_numpy(np.array([b"a", b"b"], dtype=object).reshape(2, 1))
    with pytest.raises(InferenceServerException, match="batch size does not match"):
        raw.infer("bge_m3_rerank", [query, passages])
    with BGEM3Client(server.http) as client:
        assert client.score("q", []) == []


def test_async_rerank_equals_sync(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        expected = client.rerank(QUERY, PASSAGES), client.rerank(QUERY, PASSAGES, model="bge_m3_rerank")

    async def run() -> tuple[list, list]:
        async with AsyncBGEM3Client(server.grpc, protocol="grpc") as client:
            return await client.rerank(QUERY, PASSAGES), await client.rerank(QUERY, PASSAGES, model="bge_m3_rerank")

    for got, want in zip(asyncio.run(run()), expected):
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
