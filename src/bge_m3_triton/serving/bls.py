"""Calling the embed model from another Python model through BLS (Triton's in-process requests)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from bge_m3_client import contract as c
from bge_m3_client.results import split_ragged
from bge_m3_triton.core.scoring import TextVectors
from bge_m3_triton.serving.params import InvalidRequest

_OUTPUTS = [c.DENSE, c.SPARSE_INDICES, c.SPARSE_VALUES, c.SPARSE_LENGTHS, c.COLBERT, c.COLBERT_LENGTHS]


class BLSError(RuntimeError):
    """The embed model answered a BLS request with an error."""


async def embed_texts(pb: Any, model: str, texts: list[str], max_length: int, chunk: int) -> list[TextVectors]:
    """All three outputs for `texts` from `model`, sent in concurrent requests of at most `chunk` texts.

    The requests join the embed model's batches like any client's.
    """
    ranges = [(start, min(start + chunk, len(texts))) for start in range(0, len(texts), chunk)]
    parts = await asyncio.gather(*(_embed_chunk(pb, model, texts[a:b], max_length) for a, b in ranges))
    return [vectors for part in parts for vectors in part]


async def _embed_chunk(pb: Any, model: str, texts: list[str], max_length: int) -> list[TextVectors]:
    tensor = np.array([t.encode("utf-8") for t in texts], dtype=np.object_).reshape(-1, 1)
    request = pb.InferenceRequest(model_name=model, requested_output_names=_OUTPUTS,
                                  inputs=[pb.Tensor(c.TEXT, tensor)],
                                  parameters={c.PARAM_MODE: "passage", c.PARAM_MAX_LENGTH: max_length})
    response = await request.async_exec()
    if response.has_error():
        error = response.error()
        invalid = hasattr(error, "code") and error.code() == pb.TritonError.INVALID_ARG
        raise (InvalidRequest if invalid else BLSError)(f"{model}: {error.message()}")
    out = {name: pb.get_output_tensor_by_name(response, name).as_numpy() for name in _OUTPUTS}
    sparse = split_ragged(out, c.SPARSE_LENGTHS, (c.SPARSE_INDICES, c.SPARSE_VALUES), len(texts))
    colbert = split_ragged(out, c.COLBERT_LENGTHS, (c.COLBERT,), len(texts))
    assert sparse is not None and colbert is not None
    return [TextVectors(dense=out[c.DENSE][i], sparse_ids=sparse[i][0], sparse_weights=sparse[i][1],
                        colbert=colbert[i][0]) for i in range(len(texts))]
