"""bge-m3-triton: BAAI's BGE-M3 (dense, sparse, ColBERT) and cross-encoder rerankers on Triton."""

__version__ = "0.1.0"
