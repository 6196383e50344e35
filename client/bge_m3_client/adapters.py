"""The seed sketches' request shapes on top of the clients: the RunPod worker's job and the FastAPI
sketch's `/embeddings/` and `/rerank/` bodies, answered as those sketches answered them."""

from __future__ import annotations

from typing import Any

from bge_m3_client import contract as c
from bge_m3_client.client import AsyncBGEM3Client, BGEM3Client
from bge_m3_client.errors import BGEM3Error, InvalidInputError
from bge_m3_client.packing import as_text_list
from bge_m3_client.results import EmbeddingResult

# The FastAPI sketch embedded `/embeddings/` sentences as passages and scored `/rerank/` pairs with
# these lengths and BGE-M3's default weights.
SKETCH_RERANK_LENGTHS = (256, 5000)


def runpod_args(job: Any) -> tuple[list[str], bool, int]:
    """`{"input": {...}}` or the input itself -> (texts, is_passage, batch_size); `BGEM3Error` if malformed."""
    job_input = job.get("input", job) if isinstance(job, dict) else job
    if not isinstance(job_input, dict) or "texts" not in job_input:
        raise BGEM3Error("input must be an object with a 'texts' list")
    texts, is_passage = job_input["texts"], job_input.get("isPassage", False)
    batch_size = job_input.get("batchSize", 0)
    if isinstance(texts, str) or not isinstance(texts, list):
        raise BGEM3Error("'texts' must be a list of strings")
    if not isinstance(is_passage, bool):
        raise BGEM3Error("'isPassage' must be true or false")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise BGEM3Error("'batchSize' must be a non-negative integer")
    return as_text_list(texts), is_passage, batch_size


def runpod_results(texts: list[str], results: list[EmbeddingResult]) -> dict[str, Any]:
    """The RunPod worker's output: per text its dense, Qdrant-ready sparse and ColBERT vectors."""
    return {"results": [{
        "text": text,
        "dense": r.dense.tolist() if r.dense is not None else None,
        "sparse": r.sparse,
        "colbert": r.colbert.tolist() if r.colbert is not None else None,
    } for text, r in zip(texts, results)]}


def handle_runpod(client: BGEM3Client, job: dict[str, Any]) -> dict[str, Any]:
    """One RunPod job -> `{"results": [...]}` or `{"error": "..."}`."""
    try:
        texts, is_passage, batch_size = runpod_args(job)
        results = client.encode(texts, is_passage=is_passage, return_dense=True, return_sparse=True,
                                return_colbert=True, batch_size=batch_size)
    except BGEM3Error as exc:
        return {"error": str(exc)}
    return runpod_results(texts, results)


async def handle_runpod_async(client: AsyncBGEM3Client, job: dict[str, Any]) -> dict[str, Any]:
    """`handle_runpod` on the asyncio client."""
    try:
        texts, is_passage, batch_size = runpod_args(job)
        results = await client.encode(texts, is_passage=is_passage, return_dense=True, return_sparse=True,
                                      return_colbert=True, batch_size=batch_size)
    except BGEM3Error as exc:
        return {"error": str(exc)}
    return runpod_results(texts, results)


def sketch_list(body: Any, key: str) -> list[Any]:
    """The list under `key` of a sketch body; `InvalidInputError` when the body is not shaped so."""
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise InvalidInputError(f"the body must be an object with a {key!r} list")
    return list(body[key])


def sketch_pairs(body: Any) -> list[tuple[str, str]]:
    """The `sentence_pairs` of a `/rerank/` body."""
    pairs = sketch_list(body, "sentence_pairs")
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise InvalidInputError("'sentence_pairs' must be a list of [query, passage] pairs")
    return [(p[0], p[1]) for p in pairs]


def handle_fastapi_embeddings(client: BGEM3Client, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /embeddings/`: `{"sentences": [...]}` -> `{"embeddings": [[...], ...]}` (passage dense vectors)."""
    results = client.encode(sketch_list(body, "sentences"), is_passage=True, return_dense=True, return_sparse=False)
    return {"embeddings": [r.dense.tolist() for r in results if r.dense is not None]}


def handle_fastapi_rerank(client: BGEM3Client, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /rerank/`: `{"sentence_pairs": [[q, p], ...]}` -> `{"scores": [...]}`, BGE-M3's
    colbert+sparse+dense score with weights (0.4, 0.2, 0.4) and lengths (256, 5000)."""
    query_length, passage_length = SKETCH_RERANK_LENGTHS
    scores = client.score_pairs(sketch_pairs(body), c.DEFAULT_WEIGHTS, max_query_length=query_length,
                                max_passage_length=passage_length)
    return {"scores": [s[c.COMBINED_SCORE] for s in scores]}
