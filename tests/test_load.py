"""Concurrent clients against the real server; every response checked against one-at-a-time references.

In the suite: 12 clients for 10 s. The full run (README, Reliability): LOAD_CLIENTS=48 LOAD_SECONDS=60.
Loopback only, bounded in count and time.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter

import numpy as np
import pytest
from conftest import REPO, Server, tree_rss_mib
from reference import TEXTS

from bge_m3_client import BGEM3Client, BGEM3Error, RequestRejectedError

pytestmark = pytest.mark.e2e

CLIENTS = int(os.environ.get("LOAD_CLIENTS", "12"))
SECONDS = float(os.environ.get("LOAD_SECONDS", "10"))
RSS_GROWTH_BOUND_MIB = 300
POOL = [*TEXTS, *(f"passage {i}: " + "lorem ipsum dolor sit amet " * (i % 9 + 1) for i in range(20))]


def test_load_mix_keeps_every_result_right(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        reference = {(t, p): client.encode([t], is_passage=p, return_colbert=True)[0]
                     for t in POOL for p in (False, True)}
        query = TEXTS[0]
        score_reference = {p: client.score(query, [p])[0] for p in POOL}
    rss_before = tree_rss_mib(server.process.pid)
    counts: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        protocol = "http" if seed % 2 else "grpc"
        with BGEM3Client(server.url(protocol), protocol=protocol, retries=0) as client:
            while time.monotonic() < deadline:
                try:
                    if rng.random() < 0.75:
                        kind = _embed_once(client, rng, reference)
                    else:
                        kind = _score_once(client, rng, query, score_reference)
                except RequestRejectedError:
                    kind = "rejected"
                except (BGEM3Error, AssertionError) as exc:
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}"[:300])
                    kind = "failed"
                with lock:
                    counts[kind] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 120)
    rss_after = tree_rss_mib(server.process.pid)
    summary = {"clients": CLIENTS, "seconds": SECONDS, "requests": dict(counts), "failures": failures[:5],
               "results_lost_or_wrong": len(failures), "rss_before_mib": round(rss_before),
               "rss_after_mib": round(rss_after)}
    (REPO / ".cache").mkdir(exist_ok=True)
    (REPO / ".cache" / "load-summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    assert not failures, failures[:5]
    assert counts["embed"] > CLIENTS and counts["score"] > 0
    assert rss_after - rss_before < RSS_GROWTH_BOUND_MIB
    with BGEM3Client(server.http) as client:
        assert client.encode(["still ready"])[0].tokens > 0


def _embed_once(client: BGEM3Client, rng: random.Random, reference: dict) -> str:
    texts = rng.sample(POOL, rng.randint(1, 8))
    is_passage = rng.random() < 0.5
    dense, sparse, colbert = (rng.random() < 0.7 for _ in range(3))
    results = client.encode(texts, is_passage=is_passage, return_dense=dense, return_sparse=sparse,
                            return_colbert=colbert)
    assert len(results) == len(texts)
    for text, result in zip(texts, results):
        want = reference[(text, is_passage)]
        assert result.tokens == want.tokens
        if dense:
            np.testing.assert_allclose(result.dense, want.dense, atol=1e-5)
        if sparse:
            assert result.sparse["indices"] == want.sparse["indices"]
            np.testing.assert_allclose(result.sparse["values"], want.sparse["values"], atol=1e-5)
        if colbert:
            np.testing.assert_allclose(result.colbert, want.colbert, atol=1e-5)
    return "embed"


def _score_once(client: BGEM3Client, rng: random.Random, query: str, reference: dict) -> str:
    passages = rng.sample(POOL, rng.randint(1, 5))
    for passage, scores in zip(passages, client.score(query, passages)):
        for mode, value in scores.items():
            assert abs(value - reference[passage][mode]) < 1e-5, (mode, value, reference[passage][mode])
    return "score"
