"""The clients over the in-memory transport: retries, backoff, error mapping, limits, model choice."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from bge_m3_client import AsyncBGEM3Client, BGEM3Client, InvalidInputError, RequestRejectedError
from bge_m3_client import contract as c
from bge_m3_client.runpod_worker import ConcurrencyModifier
from bge_m3_client.testing import AsyncFakeTransport, FakeTransport, StatusError
from bge_m3_client.transport import Call


def config(max_batch_size: int, query: str = "512", passage: str = "8192") -> dict[str, Any]:
    return {"max_batch_size": max_batch_size, "parameters": {"query_max_length": {"string_value": query},
                                                             "passage_max_length": {"string_value": passage}}}


CONFIGS = {c.EMBED_MODEL: config(2), c.RERANK_MODEL: config(4), c.CROSS_ENCODER_MODEL: config(4)}


def embed_answer(call: Call) -> dict[str, np.ndarray]:
    rows = call.inputs[c.TEXT].shape[0]
    return {c.DENSE: np.full((rows, 4), 0.5, np.float32), c.TOKENS: np.full((rows, 1), 3, np.int32),
            c.TRUNCATED: np.zeros((rows, 1), bool)}


def flaky(failures: list[BaseException]) -> Any:
    def handler(call: Call) -> Any:
        return failures.pop(0) if failures else embed_answer(call)
    return handler


def client_over(transport: FakeTransport, retries: int = 3) -> tuple[BGEM3Client, list[float]]:
    client = BGEM3Client(transport=transport, retries=retries, backoff=0.1)
    sleeps: list[float] = []
    client.sleep = sleeps.append
    return client, sleeps


def test_rejections_are_retried_with_exponential_backoff() -> None:
    busy = StatusError("StatusCode.UNAVAILABLE", "Exceeds maximum queue size")
    transport = FakeTransport(flaky([busy, busy]), CONFIGS)
    client, sleeps = client_over(transport)
    results = client.encode(["a"], return_sparse=False)
    assert len(results) == 1 and results[0].tokens == 3
    assert sleeps == [0.1, 0.2] and len(transport.calls) == 3


def test_retries_give_up_with_the_typed_error_naming_the_texts() -> None:
    busy = StatusError("503", "queue full")
    client, sleeps = client_over(FakeTransport(flaky([busy] * 10), CONFIGS), retries=2)
    with pytest.raises(RequestRejectedError, match="texts 0..0 failed") as caught:
        client.encode(["a"], return_sparse=False)
    assert caught.value.failed == (0, 1) and sleeps == [0.1, 0.2]


def test_invalid_input_is_not_retried() -> None:
    transport = FakeTransport(flaky([StatusError("400", "parameter 'mode' is bad")]), CONFIGS)
    client, sleeps = client_over(transport)
    with pytest.raises(InvalidInputError, match="mode"):
        client.encode(["a"], return_sparse=False)
    assert sleeps == [] and len(transport.calls) == 1


def test_only_the_failed_requests_are_sent_again() -> None:
    failures = {"b"}

    def handler(call: Call) -> Any:
        texts = {t.decode() for t in call.inputs[c.TEXT].reshape(-1)}
        if texts & failures:
            failures.clear()
            return StatusError("StatusCode.UNAVAILABLE", "busy")
        return embed_answer(call)

    transport = FakeTransport(handler, CONFIGS)
    client, _ = client_over(transport)
    assert len(client.encode(["a", "x", "b", "y"], return_sparse=False)) == 4
    sent = [[t.decode() for t in call.inputs[c.TEXT].reshape(-1)] for call in transport.calls]
    assert sent == [["a", "x"], ["b", "y"], ["b", "y"]]  # chunks of the served max_batch_size, 2


def test_limits_come_from_the_served_config() -> None:
    transport = FakeTransport(embed_answer, {c.EMBED_MODEL: config(3, passage="4")})
    client, _ = client_over(transport)
    assert client.served(c.EMBED_MODEL) == c.ServedModel(3, 512, 4)
    assert client.served(c.EMBED_MODEL).max_length(is_passage=True) == 4
    client.encode(["a"] * 7, is_passage=True, return_sparse=False)
    assert [call.inputs[c.TEXT].shape[0] for call in transport.calls] == [3, 3, 1]


def test_the_weight_rule_is_the_contracts() -> None:
    client, _ = client_over(FakeTransport(embed_answer, CONFIGS))
    for weights in ((0, 0, 1), (1, -1, 0), (1, 1), (float("nan"), 1, 1)):
        with pytest.raises(InvalidInputError):
            client.score("q", ["p"], weights=weights)
        with pytest.raises(ValueError):
            c.check_weights(weights)
    assert c.check_weights((0, 1, 0)) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize(("ready", "expected"), [((c.CROSS_ENCODER_MODEL,), c.CROSS_ENCODER_MODEL),
                                                 ((), c.RERANK_MODEL)])
def test_rerank_uses_the_cross_encoder_when_it_is_served(ready: tuple[str, ...], expected: str) -> None:
    def handler(call: Call) -> Any:
        rows = call.inputs[c.QUERY].shape[0]
        if call.model == c.CROSS_ENCODER_MODEL:
            return {c.SCORE: np.arange(rows, dtype=np.float32).reshape(-1, 1)}
        return {c.SCORES: np.tile(np.arange(rows, dtype=np.float32).reshape(-1, 1), (1, 5))}

    transport = FakeTransport(handler, CONFIGS, ready=ready)
    client, _ = client_over(transport)
    assert client.rerank("q", ["a", "b", "c"], top_n=2) == [(2, 2.0), (1, 1.0)]
    assert {call.model for call in transport.calls} == {expected}


def test_async_client_retries_the_same_way() -> None:
    busy = StatusError("StatusCode.UNAVAILABLE", "busy")
    transport = AsyncFakeTransport(flaky([busy]), CONFIGS)

    async def run() -> int:
        client = AsyncBGEM3Client(transport=transport, backoff=0.001)
        return len(await client.encode(["a", "b", "c"], return_sparse=False))

    assert asyncio.run(run()) == 3 and len(transport.calls) == 3


def test_concurrency_modifier_follows_the_request_rate() -> None:
    now = [0.0]
    modifier = ConcurrencyModifier(minimum=1, maximum=4, scale_up=0.05, scale_down=0.0, window_s=10,
                                   clock=lambda: now[0])
    assert modifier(1) == 1  # idle: stays at the minimum
    for _ in range(5):  # 0.5 requests/s > 0.05: grows by one per call, up to the maximum
        modifier.record()
    assert [modifier(n) for n in (1, 2, 3, 4)] == [2, 3, 4, 4]
    now[0] = 5.0
    modifier.record()
    assert modifier(3) == 4
    now[0] = 20.0  # the window has emptied: 0 requests/s shrinks one step at a time
    assert [modifier(n) for n in (4, 3, 2, 1)] == [3, 2, 1, 1]
    gentle = ConcurrencyModifier(scale_up=1.0, scale_down=0.05, window_s=10, clock=lambda: now[0])
    gentle.record()  # 0.1 requests/s: between the thresholds, concurrency holds
    assert gentle(2) == 2
    assert ConcurrencyModifier.from_env({}).maximum == 4
    with pytest.raises(ValueError):
        ConcurrencyModifier(minimum=3, maximum=2)


@pytest.mark.parametrize("method", ["encode", "tokenize", "rerank"])
def test_a_lone_surrogate_is_invalid_input_named_and_never_sent(method: str) -> None:
    transport = FakeTransport(embed_answer, CONFIGS)
    client, _ = client_over(transport)
    texts = ["fine", "cut in the middle of an emoji \ud83d"]
    call = {"encode": lambda: client.encode(texts), "tokenize": lambda: client.tokenize(texts),
            "rerank": lambda: client.rerank("query", texts, model=c.RERANK_MODEL)}[method]
    with pytest.raises(InvalidInputError, match=r"\[1\] is not valid Unicode: .*U\+D83D\) at character 30"):
        call()
    assert transport.calls == []


def test_a_lone_surrogate_in_a_query_names_the_queries() -> None:
    client, _ = client_over(FakeTransport(embed_answer, CONFIGS))
    with pytest.raises(InvalidInputError, match=r"queries\[0\] is not valid Unicode"):
        client.score("\udfff", ["p"])


@pytest.mark.parametrize("value", [2**63, 2**64 + 1, 0, -5, c.MAX_TOKENS + 1, 3.5, True, "512"])
def test_lengths_out_of_range_are_refused_before_sending(value: Any) -> None:
    transport = FakeTransport(embed_answer, CONFIGS)
    client, _ = client_over(transport)
    with pytest.raises(InvalidInputError, match="max_length must be"):
        client.encode(["a"], max_length=value)
    with pytest.raises(InvalidInputError, match="max_passage_length must be"):
        client.score("q", ["p"], max_passage_length=value)
    assert transport.calls == []


def test_a_failure_building_the_request_is_not_retried() -> None:
    """tritonclient raises status-less errors while it encodes a request (a parameter out of range):
    they are no sign of an unreachable server, so they are neither retried nor called unavailable."""
    transport = FakeTransport(flaky([ValueError("Value out of range: 9223372036854775808")]), CONFIGS)
    client, sleeps = client_over(transport)
    with pytest.raises(InvalidInputError, match="could not be built"):
        client.encode(["a"], return_sparse=False)
    assert sleeps == [] and len(transport.calls) == 1


@pytest.mark.parametrize("fmt", ["float16", "int8", "uint8", "binary", "ubinary"])
def test_formats_are_asked_for_and_decoded(fmt: str) -> None:
    from fake_triton import transport

    from bge_m3_client import formats

    fake = transport()
    client, _ = client_over(fake)
    plain = client.encode(["one two three", "four"], is_passage=True, return_colbert=True)
    packed = client.encode(["one two three", "four"], is_passage=True, return_colbert=True, dense_format=fmt,
                           colbert_format=fmt)
    call = fake.calls[-1]
    assert call.parameters[c.PARAM_DENSE_FORMAT] == fmt == call.parameters[c.PARAM_COLBERT_FORMAT]
    assert (c.DENSE_SCALE in call.outputs) == (fmt in formats.SCALED)
    for a, b in zip(plain, packed):
        assert b.dense is not None and b.colbert is not None and a.dense is not None and a.colbert is not None
        assert b.dense.dtype == formats.NUMPY_DTYPES[fmt] and b.colbert.dtype == formats.NUMPY_DTYPES[fmt]
        assert b.colbert.shape == (a.colbert.shape[0], formats.width(fmt, a.colbert.shape[1]))
        expected_dense, _ = formats.encode(a.dense[None], fmt)
        np.testing.assert_array_equal(b.dense, expected_dense[0])
        assert (b.dense_scale is not None) == (fmt in formats.SCALED)
        restored = b.colbert_float()
        assert restored is not None and restored.dtype == np.float32 and restored.shape == a.colbert.shape


def test_an_unknown_format_is_refused_before_sending() -> None:
    transport = FakeTransport(embed_answer, CONFIGS)
    client, _ = client_over(transport)
    with pytest.raises(InvalidInputError, match="colbert_format must be one of"):
        client.encode(["a"], colbert_format="int4")
    assert transport.calls == []
