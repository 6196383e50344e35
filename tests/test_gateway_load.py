"""Concurrent HTTP clients through the gateway; every response checked against one-at-a-time references.

In the suite: 32 clients for 10 s. Longer: GATEWAY_LOAD_CLIENTS / GATEWAY_LOAD_SECONDS. Loopback only,
bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter

import httpx
import numpy as np
import pytest
from conftest import GATEWAY_KEY, REPO, Gateway, Server
from reference import TEXTS

from bge_m3_client import BGEM3Client

pytestmark = pytest.mark.e2e

CLIENTS = int(os.environ.get("GATEWAY_LOAD_CLIENTS", "32"))
SECONDS = float(os.environ.get("GATEWAY_LOAD_SECONDS", "10"))
POOL = [t for t in TEXTS if t] + [f"passage {i}: " + "lorem ipsum dolor sit amet " * (i % 9 + 1) for i in range(12)]
QUERY = TEXTS[0]


def test_gateway_load_keeps_every_result_right(gateway: Gateway, server: Server) -> None:
    with BGEM3Client(server.grpc, protocol="grpc") as client:
        dense = {t: client.encode([t], is_passage=True, return_sparse=False)[0].dense for t in POOL}
        sparse = {t: client.encode([t], is_passage=True)[0].sparse for t in POOL}
        scores = {p: client.score(QUERY, [p])[0] for p in POOL}
    counts: Counter[str] = Counter()
    failures: list[str] = []

    async def worker(seed: int, http: httpx.AsyncClient, deadline: float) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            texts = rng.sample(POOL, rng.randint(1, 6))
            kind = rng.choice(("openai", "sparse", "score"))
            try:
                if kind == "openai":
                    body = (await http.post("/v1/embeddings", json={"input": texts})).raise_for_status().json()
                    for text, item in zip(texts, body["data"], strict=True):
                        np.testing.assert_allclose(item["embedding"], dense[text], atol=1e-5)
                elif kind == "sparse":
                    body = (await http.post("/v1/m3/embed", json={"texts": texts, "mode": "passage",
                                                                  "return_dense": False})).raise_for_status().json()
                    for text, item in zip(texts, body["data"], strict=True):
                        assert item["sparse"]["indices"] == sparse[text]["indices"], text
                        np.testing.assert_allclose(item["sparse"]["values"], sparse[text]["values"], atol=1e-5)
                else:
                    body = (await http.post("/v1/m3/score", json={"query": QUERY, "passages": texts})
                            ).raise_for_status().json()
                    for text, item in zip(texts, body["scores"], strict=True):
                        np.testing.assert_allclose(item["colbert+sparse+dense"],
                                                   scores[text]["colbert+sparse+dense"], atol=1e-5)
                counts[kind] += 1
            except (httpx.HTTPError, AssertionError, KeyError, ValueError) as exc:
                failures.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])

    async def run() -> None:
        deadline = time.monotonic() + SECONDS
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=120, limits=limits,
                                     headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as http:
            await asyncio.gather(*(worker(i, http, deadline) for i in range(CLIENTS)))

    asyncio.run(run())
    summary = {"clients": CLIENTS, "seconds": SECONDS, "requests": dict(counts), "failures": failures[:5]}
    (REPO / ".cache").mkdir(exist_ok=True)
    (REPO / ".cache" / "gateway-load-summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    assert not failures, failures[:5]
    assert sum(counts.values()) > CLIENTS and all(counts[k] > 0 for k in ("openai", "sparse", "score"))
