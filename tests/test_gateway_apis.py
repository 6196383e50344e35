"""The HTTP gateway against a real Triton, called with the real SDKs (openai, cohere) and httpx.

Every number is compared with the Python client's for the same texts: dense within 1e-6, sparse and
scores exactly as the client returns them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import cohere
import httpx
import numpy as np
import openai
import pytest
from conftest import GATEWAY_KEY, Gateway, Server
from reference import TEXTS

from bge_m3_client import BGEM3Client

pytestmark = pytest.mark.server

NONEMPTY = [t for t in TEXTS if t.strip()]
DOCS = ["BGE M3 supports dense, sparse and multi-vector retrieval.", "Paris is the capital of France.",
        "Triton batches requests dynamically.", "Le chat dort sur le canapé."]
QUERY = "which model gives dense and sparse vectors?"


_OPEN: list[Any] = []  # clients a test opened: closed after it (an unclosed socket is a ResourceWarning, an error)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def opened(client: Any) -> Any:
    """`client` (httpx, the openai or cohere SDK), closed after the test."""
    _OPEN.append(client)
    return client


def http(gateway: Gateway) -> httpx.Client:
    return opened(httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, timeout=60))


@pytest.fixture(scope="module")
def client(server: Server) -> BGEM3Client:
    with BGEM3Client(server.grpc, protocol="grpc") as direct:
        yield direct


def test_openai_sdk_float_and_base64(gateway: Gateway, client: BGEM3Client) -> None:
    sdk = opened(openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY))
    expected = client.encode(NONEMPTY, is_passage=True, return_sparse=False)
    for encoding in ("float", "base64"):
        response = sdk.embeddings.create(model="bge-m3", input=NONEMPTY, encoding_format=encoding)
        assert [d.index for d in response.data] == list(range(len(NONEMPTY)))
        for data, result in zip(response.data, expected):
            vector = (np.frombuffer(base64.b64decode(data.embedding), dtype="<f4") if encoding == "base64"
                      else np.asarray(data.embedding, dtype=np.float32))  # asked for explicitly, the SDK keeps base64
            np.testing.assert_allclose(vector, result.dense, atol=1e-6)
        assert response.usage.prompt_tokens == response.usage.total_tokens == sum(r.tokens for r in expected)
        assert response.model == "bge-m3"
    single = sdk.embeddings.create(model="bge-m3", input=NONEMPTY[0])  # the SDK's default asks for base64
    np.testing.assert_allclose(single.data[0].embedding, expected[0].dense, atol=1e-6)
    raw = http(gateway).post("/v1/embeddings", json={"input": "x", "encoding_format": "base64"}).json()
    assert len(base64.b64decode(raw["data"][0]["embedding"])) == expected[0].dense.shape[0] * 4  # float32
    assert [m.id for m in sdk.models.list().data] == ["bge-m3", "bge-reranker"]


def test_openai_sdk_errors(gateway: Gateway) -> None:
    sdk = opened(openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0))
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        sdk.embeddings.create(model="bge-m3", input=[[101, 2023, 102]])
    with pytest.raises(openai.BadRequestError, match="Matryoshka"):
        sdk.embeddings.create(model="bge-m3", input="x", dimensions=16)
    with pytest.raises(openai.AuthenticationError):
        opened(openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0)).embeddings.create(
            model="bge-m3", input="x")


def test_query_mode_extension(gateway: Gateway, client: BGEM3Client) -> None:
    long_text = TEXTS[-1]  # ~1,300 tokens: cut at 512 in query mode
    body = http(gateway).post("/v1/embeddings", json={"input": [long_text], "input_type": "query"}).json()
    expected = client.encode([long_text], return_sparse=False)[0]
    assert body["usage"]["prompt_tokens"] == expected.tokens == 512
    np.testing.assert_allclose(body["data"][0]["embedding"], expected.dense, atol=1e-6)


def test_cohere_sdk_rerank(gateway: Gateway, client: BGEM3Client) -> None:
    sdk = cohere.ClientV2(api_key=GATEWAY_KEY, base_url=gateway.url, httpx_client=opened(httpx.Client(timeout=60)))
    response = sdk.rerank(model="bge-reranker", query=QUERY, documents=DOCS, top_n=3)
    expected = client.rerank(QUERY, DOCS, top_n=3)  # the cross-encoder is deployed: it is the default
    assert [(r.index, r.relevance_score) for r in response.results] == expected
    combined = sdk.rerank(model="bge-m3", query=QUERY, documents=DOCS)
    scores = [s["colbert+sparse+dense"] for s in client.score(QUERY, DOCS)]
    assert sorted((r.index, r.relevance_score) for r in combined.results) == list(enumerate(scores))


def test_cohere_sdk_embed_with_three_types_at_once(gateway: Gateway, client: BGEM3Client) -> None:
    """The `cohere` SDK's ClientV2.embed against the gateway: float, int8 and ubinary in one call, each what the
    server's own formats give, the query and document modes as input_type says."""
    from bge_m3_client import formats

    sdk = cohere.ClientV2(api_key=GATEWAY_KEY, base_url=gateway.url, httpx_client=opened(httpx.Client(timeout=60)))
    response = sdk.embed(model="bge-m3", input_type="search_document", texts=DOCS,
                         embedding_types=["float", "int8", "ubinary"])
    passages = client.encode(DOCS, is_passage=True, return_sparse=False)
    for index, expected in enumerate(passages):
        assert expected.dense is not None
        np.testing.assert_allclose(response.embeddings.float_[index], expected.dense, atol=1e-6)
        for kind, got in (("int8", response.embeddings.int8), ("ubinary", response.embeddings.ubinary)):
            np.testing.assert_array_equal(got[index], formats.encode(expected.dense[None], kind)[0][0])
    assert response.texts == DOCS and response.meta.billed_units.input_tokens == sum(p.tokens for p in passages)
    query = sdk.embed(model="bge-m3", input_type="search_query", texts=[QUERY], embedding_types=["float"])
    expected_query = client.encode([QUERY], return_sparse=False)[0].dense
    np.testing.assert_allclose(query.embeddings.float_[0], expected_query, atol=1e-6)
    with pytest.raises(cohere.core.api_error.ApiError) as refused:
        sdk.embed(model="bge-m3", input_type="search_query", texts=[QUERY], embedding_types=["int4"])
    assert refused.value.status_code == 400 and "embedding_types" in str(refused.value.body)


def test_jina_style_rerank(gateway: Gateway, client: BGEM3Client) -> None:
    body = http(gateway).post("/v1/rerank", json={"model": "bge-reranker", "query": QUERY, "documents": DOCS,
                                                  "top_n": 10, "return_documents": True}).json()
    expected = client.rerank(QUERY, DOCS)
    assert [(r["index"], r["relevance_score"]) for r in body["results"]] == expected  # top_n past the end: all
    assert [r["document"]["text"] for r in body["results"]] == [DOCS[i] for i, _ in expected]


def test_tei_routes(gateway: Gateway, client: BGEM3Client) -> None:
    tei = http(gateway)
    expected = client.encode(NONEMPTY, is_passage=True, return_colbert=True)
    dense = tei.post("/embed", json={"inputs": NONEMPTY}).json()
    np.testing.assert_allclose(np.asarray(dense, dtype=np.float32), np.stack([r.dense for r in expected]), atol=1e-6)
    sparse = tei.post("/embed_sparse", json={"inputs": NONEMPTY}).json()
    assert [{"indices": [x["index"] for x in row], "values": [x["value"] for x in row]} for row in sparse] == \
        [r.sparse for r in expected]
    colbert = tei.post("/embed_all", json={"inputs": NONEMPTY[:3]}).json()
    for vectors, result in zip(colbert, expected):
        np.testing.assert_allclose(np.asarray(vectors, dtype=np.float32), result.colbert, atol=1e-6)
    ranked = tei.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
    assert [(r["index"], r["score"]) for r in ranked] == client.rerank(QUERY, DOCS)
    assert all(r["text"] == DOCS[r["index"]] for r in ranked)
    raw = tei.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert [(r["index"], r["score"]) for r in raw] == client.rerank(QUERY, DOCS, normalize=False)
    info = tei.get("/info").json()
    assert info["max_input_length"] == 8192 and info["model_dtype"] == "float32"
    assert info["max_batch_tokens"] == 64 * 8192  # the gateway's --max-inputs, each at the passage limit


def test_tei_truncate_false_refuses_with_the_length(gateway: Gateway) -> None:
    tei = http(gateway)
    over = " ".join(["word"] * 9000)  # over the 8,192-token passage limit
    refused = tei.post("/embed", json={"inputs": ["short", over]})
    assert refused.status_code == 422 and refused.json()["error_type"] == "Validation"
    assert "inputs[0] is more than 8,192 tokens long" in refused.json()["error"]
    assert tei.post("/embed", json={"inputs": ["short", over], "truncate": True}).status_code == 200
    cross = tei.post("/rerank", json={"query": "q", "texts": ["ok", " ".join(["word"] * 600)]})
    assert cross.status_code == 422 and "over the cross-encoder's limit of 512" in cross.json()["error"]
    assert tei.post("/rerank", json={"query": "q", "texts": ["ok", " ".join(["word"] * 600)],
                                     "truncate": True}).status_code == 200


def test_tokenize_offsets_point_into_the_text(gateway: Gateway, client: BGEM3Client) -> None:
    tei = http(gateway)
    texts = ["Hello wörld 🎉, 東京は日本の首都", "a b"]
    tokens = tei.post("/tokenize", json={"inputs": texts}).json()
    for text, row, expected in zip(texts, tokens, client.tokenize(texts, is_passage=True)):
        assert [t["id"] for t in row] == expected.ids
        assert row[0] == {"id": 0, "text": "<s>", "special": True, "start": None, "stop": None}
        assert row[-1]["text"] == "</s>"
        for token in row[1:-1]:
            assert token["text"] == text[token["start"]:token["stop"]]
    plain = tei.post("/tokenize", json={"inputs": "a b", "add_special_tokens": False}).json()
    assert not any(t["special"] for t in plain[0])


def test_native_routes(gateway: Gateway, client: BGEM3Client) -> None:
    native = http(gateway)
    body = native.post("/v1/m3/embed", json={"texts": TEXTS, "mode": "passage", "return_colbert": True}).json()
    expected = client.encode(TEXTS, is_passage=True, return_colbert=True)
    for item, result in zip(body["data"], expected):
        np.testing.assert_allclose(item["dense"], result.dense, atol=1e-6)
        np.testing.assert_allclose(np.asarray(item["colbert"], dtype=np.float32), result.colbert, atol=1e-6)
        assert item["sparse"] == result.sparse
        assert (item["tokens"], item["truncated"]) == (result.tokens, result.truncated)
    weights = [0.5, 0.3, 0.2]
    scores = native.post("/v1/m3/score", json={"query": QUERY, "passages": DOCS, "weights": weights,
                                               "max_passage_length": 64}).json()["scores"]
    assert [{k: v for k, v in s.items() if k != "index"} for s in scores] == \
        client.score(QUERY, DOCS, weights, max_passage_length=64)


def test_seed_sketch_routes(gateway: Gateway, client: BGEM3Client) -> None:
    sketch = http(gateway)
    embeddings = sketch.post("/embeddings/", json={"sentences": DOCS}).json()["embeddings"]
    for vector, result in zip(embeddings, client.encode(DOCS, is_passage=True, return_sparse=False)):
        np.testing.assert_allclose(vector, result.dense, atol=1e-6)
    scores = sketch.post("/rerank/", json={"sentence_pairs": [[QUERY, d] for d in DOCS]}).json()["scores"]
    expected = client.score(QUERY, DOCS, (0.4, 0.2, 0.4), max_query_length=256, max_passage_length=5000)
    assert scores == [s["colbert+sparse+dense"] for s in expected]


def test_health_metrics_and_docs(gateway: Gateway) -> None:
    open_client = opened(httpx.Client(base_url=gateway.url))  # no API key: these are open
    assert open_client.get("/health").json() == {"status": "ok"}
    assert open_client.get("/openapi.json").json()["paths"].keys() >= {"/v1/embeddings", "/embed", "/v2/rerank",
                                                                        "/v1/m3/embed", "/embeddings/"}
    http(gateway).post("/embed", json={"inputs": ["count me", "and me"]})
    metrics = open_client.get("/metrics").text
    assert 'bge_m3_gateway_requests_total{route="/embed",status="200"}' in metrics
    assert 'bge_m3_gateway_texts_total{route="/embed"}' in metrics
    assert 'bge_m3_gateway_tokens_total{route="/embed"}' in metrics
    assert 'bge_m3_gateway_request_seconds_bucket{le="0.005",route="/embed"}' in metrics
