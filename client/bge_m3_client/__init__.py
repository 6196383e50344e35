"""Thin Python client for bge-m3-triton: BGE-M3 dense, sparse and ColBERT embeddings and reranking."""

from bge_m3_client.client import AsyncBGEM3Client, BGEM3Client
from bge_m3_client.errors import (
    BGEM3Error,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from bge_m3_client.results import EmbeddingResult, TokenizedText

__all__ = [
    "AsyncBGEM3Client", "BGEM3Client", "BGEM3Error", "EmbeddingResult", "InferenceError", "InvalidInputError",
    "ModelNotReadyError", "RequestRejectedError", "RequestTimeoutError", "ServerUnavailableError", "TokenizedText",
]
