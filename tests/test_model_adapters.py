"""The `model.py` adapters with a stand-in pb_utils: one response per request, errors stay per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_pb_utils import Request, answers, load_model_py, texts, triton_args
from reference import ATOL, QUERY_MAX, TEXTS, encode


@pytest.fixture(scope="module")
def embed_model(m3_checkpoint: Path) -> Any:
    model = load_model_py("bge_m3").TritonPythonModel()
    model.initialize(triton_args("bge_m3", {"model": str(m3_checkpoint), "dtype": "float32",
                                            "max_batch_tokens": "64"}))
    return model


def test_mixed_batch_answers_every_request(embed_model: Any, m3_checkpoint: Path) -> None:
    requests = [
        Request({"TEXT": texts(*TEXTS[:3])}),
        Request({"TEXT": texts("ok", b"\xff")}),
        Request({"TEXT": texts(*TEXTS[3:])}, {"mode": "query"}, outputs=["DENSE", "TOKENS"]),
        Request({"TEXT": texts("x")}, {"max_length": -3}),
        Request({"OTHER": texts("x")}),
        Request({"TEXT": texts("cancelled")}, cancelled=True),
    ]
    responses = answers(embed_model, requests)
    assert len(responses) == len(requests)
    ref = encode(m3_checkpoint, TEXTS, QUERY_MAX)
    first, third = responses[0].output_tensors, responses[2].output_tensors
    assert set(third) == {"DENSE", "TOKENS"}
    np.testing.assert_allclose(first["DENSE"], ref["dense_vecs"][:3], atol=ATOL)
    np.testing.assert_allclose(third["DENSE"], ref["dense_vecs"][3:], atol=ATOL)
    assert first["SPARSE_LENGTHS"].reshape(-1).tolist() == [len(w) for w in ref["lexical_weights"][:3]]
    assert first["COLBERT"].shape[0] == int(first["COLBERT_LENGTHS"].sum())
    assert "UTF-8" in responses[1].error().message() and responses[1].error().code() == "INVALID_ARG"
    assert "max_length" in responses[3].error().message()
    assert "TEXT" in responses[4].error().message()
    assert responses[5].error().code() == "CANCELLED"


def test_a_failing_request_does_not_fail_the_batch(embed_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    service = embed_model.service
    real_tokenize, real_encode = service.model.tokenize, service.model.encode_tokenized
    poison_ids = real_tokenize(["poison in the forward pass"], [512]).ids[0]

    def tokenize_or_fail(batch: list[str], *args: Any, **kwargs: Any) -> Any:
        if "poison" in batch:
            raise RuntimeError("simulated failure\n  File /secret/path.py, line 1")
        return real_tokenize(batch, *args, **kwargs)

    def encode_or_fail(tokens: Any, *args: Any, **kwargs: Any) -> Any:
        if poison_ids in tokens.ids:
            raise ValueError("simulated forward failure")
        return real_encode(tokens, *args, **kwargs)

    monkeypatch.setattr(service.model, "tokenize", tokenize_or_fail)
    monkeypatch.setattr(service.model, "encode_tokenized", encode_or_fail)
    responses = answers(embed_model, [Request({"TEXT": texts("fine")}), Request({"TEXT": texts("poison")}),
                                      Request({"TEXT": texts("also fine")}),
                                      Request({"TEXT": texts("poison in the forward pass")}),
                                      Request({"TEXT": texts("fine", "again")})])
    assert [r.has_error() for r in responses] == [False, True, False, True, False]
    assert responses[1].error().message() == "inference failed: RuntimeError: simulated failure"
    assert responses[1].error().code() == "INTERNAL"
    assert responses[3].error().message() == "inference failed: ValueError: simulated forward failure"
    assert responses[4].output_tensors["DENSE"].shape == (2, 32)
    assert not answers(embed_model, [Request({"TEXT": texts("next batch")})])[0].has_error()


def test_cross_encoder_adapter(reranker_checkpoint: Path) -> None:
    model = load_model_py("bge_reranker").TritonPythonModel()
    model.initialize(triton_args("bge_reranker", {"model": str(reranker_checkpoint), "dtype": "float32"}))
    responses = answers(model, [
        Request({"QUERY": texts("q", "q"), "PASSAGE": texts("a", "b")}),
        Request({"QUERY": texts("q"), "PASSAGE": texts("a")}, {"normalize": False}),
        Request({"QUERY": texts("q"), "PASSAGE": texts("a", "b")}),
        Request({"QUERY": texts("q"), "PASSAGE": texts("a")}, {"normalize": "yes"}),
    ])
    scores = responses[0].output_tensors["SCORE"]
    assert scores.shape == (2, 1) and ((scores > 0) & (scores < 1)).all()
    logit = float(responses[1].output_tensors["SCORE"][0, 0])
    assert 1 / (1 + np.exp(-logit)) == pytest.approx(float(scores[0, 0]), abs=1e-6)
    assert "rows" in responses[2].error().message()
    assert "normalize" in responses[3].error().message()


def test_oversized_colbert_response_is_refused_alone(m3_checkpoint: Path) -> None:
    model = load_model_py("bge_m3").TritonPythonModel()
    model.initialize(triton_args("bge_m3", {"model": str(m3_checkpoint), "dtype": "float32",
                                            "max_response_bytes": "20000"}))
    long_text = "many words here " * 100
    responses = answers(model, [
        Request({"TEXT": texts(long_text)}, {"mode": "passage"}, outputs=["COLBERT", "COLBERT_LENGTHS"]),
        Request({"TEXT": texts(long_text)}, {"mode": "passage"}, outputs=["DENSE"]),
    ])
    assert "send fewer or shorter texts" in responses[0].error().message()
    assert responses[1].output_tensors["DENSE"].shape == (1, 32)
