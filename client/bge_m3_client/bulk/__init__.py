"""Embedding a whole corpus: read documents as a stream, embed them concurrently through Triton, write
Parquet part files or Qdrant points, resumably (`bge-m3-client embed`). Needs the `bulk` extra."""
