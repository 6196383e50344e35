"""Compact numeric formats for dense and ColBERT vectors, defined once for the server and the client.

A request picks a format per output (`dense_format`, `colbert_format`); the vectors travel in it, so the
bytes shrink on the wire, not only after it. Every vector is L2-normalized before it is encoded.

| format | Triton dtype | per vector of d dims | decode |
|---|---|---|---|
| `float32` | FP32 | d x 4 bytes | as is |
| `float16` | FP16 | d x 2 bytes | as is (float16) |
| `int8` | INT8 | d bytes, and a scale | `q * scale` |
| `uint8` | UINT8 | d bytes, and a scale | `(u - 128) * scale` |
| `binary` | INT8 | d / 8 bytes | the sign bits: `ubinary` minus 128, as int8 |
| `ubinary` | UINT8 | d / 8 bytes | the sign bits, `numpy.packbits(x > 0)` |

`int8` is symmetric and per vector: `scale = max|x| / 127`, `q = round(x / scale)` in [-127, 127], so a
vector keeps its direction to within rounding (cosine to the float32 vector above 0.999 at BGE-M3's
widths) and cosine or dot-product ranking works on the integers as they are; the scale (`DENSE_SCALE`,
`COLBERT_SCALE`, one float32 per vector) gives back magnitudes. `uint8` is `int8 + 128`, the offset
Cohere's `uint8` embeddings use (Qdrant's `uint8` datatype stores it as is). `binary` and `ubinary` are
Cohere's and sentence-transformers' packed signs: compare with Hamming distance, then rescore the best
with float32 vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOAT32, FLOAT16, INT8, UINT8, BINARY, UBINARY = "float32", "float16", "int8", "uint8", "binary", "ubinary"
FORMATS = (FLOAT32, FLOAT16, INT8, UINT8, BINARY, UBINARY)
TRITON_DTYPES = {FLOAT32: "FP32", FLOAT16: "FP16", INT8: "INT8", UINT8: "UINT8", BINARY: "INT8", UBINARY: "UINT8"}
NUMPY_DTYPES = {FLOAT32: np.float32, FLOAT16: np.float16, INT8: np.int8, UINT8: np.uint8, BINARY: np.int8,
                UBINARY: np.uint8}
SCALED = frozenset({INT8, UINT8})  # the formats that send one scale per vector
PACKED = frozenset({BINARY, UBINARY})  # the formats that pack eight dimensions into a byte
UINT8_ZERO = 128


def width(fmt: str, dim: int) -> int:
    """Values per vector in `fmt` for vectors of `dim` dimensions."""
    return dim // 8 if fmt in PACKED else dim


def bytes_per_vector(fmt: str, dim: int) -> int:
    """Bytes a vector of `dim` dimensions takes on the wire in `fmt`, its scale included."""
    return width(fmt, dim) * np.dtype(NUMPY_DTYPES[fmt]).itemsize + (4 if fmt in SCALED else 0)


def check(fmt: str, what: str) -> str:
    """`fmt`, or ValueError naming `what` and the formats there are."""
    if fmt not in FORMATS:
        raise ValueError(f"{what} must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def encode(vectors: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """`vectors` ([k, dim], float) in `fmt`: the values, and the per-vector scales ([k, 1] float32) of the
    scaled formats (else None)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if fmt == FLOAT32:
        return vectors, None
    if fmt == FLOAT16:
        return vectors.astype(np.float16), None
    if fmt in PACKED:
        if vectors.shape[-1] % 8:
            raise ValueError(f"{fmt} packs eight dimensions into a byte: {vectors.shape[-1]} is no multiple of 8")
        packed = np.packbits(vectors > 0, axis=-1)
        return (packed if fmt == UBINARY else (packed.astype(np.int16) - UINT8_ZERO).astype(np.int8)), None
    peak = np.abs(vectors).max(axis=-1, keepdims=True)
    scale = (peak / np.float32(127.0)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0))  # all zeros, or so small the step underflows: zeros
    quantized = np.clip(np.rint(vectors / scale), -127, 127).astype(np.int8)
    if fmt == UINT8:
        return (quantized.astype(np.int16) + UINT8_ZERO).astype(np.uint8), scale
    return quantized, scale


def decode(values: np.ndarray, fmt: str, scale: np.ndarray | float | None = None) -> np.ndarray:
    """float32 vectors back from `fmt`: the floats, the dequantized integers, or the signs (+1/-1) of the
    packed bits."""
    if fmt in (FLOAT32, FLOAT16):
        return np.asarray(values, dtype=np.float32)
    if fmt in PACKED:
        bits = np.asarray(values).astype(np.int16) + (UINT8_ZERO if fmt == BINARY else 0)
        return np.unpackbits(bits.astype(np.uint8), axis=-1).astype(np.float32) * 2 - 1
    integers = np.asarray(values).astype(np.float32) - (UINT8_ZERO if fmt == UINT8 else 0)
    decoded: np.ndarray = integers * (np.asarray(scale, dtype=np.float32) if scale is not None else np.float32(1))
    return decoded


def hamming(query: np.ndarray, documents: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Hamming distances between a packed query ([d / 8] bytes, binary or ubinary) and packed documents."""
    q = np.asarray(query).view(np.uint8)
    docs = np.asarray(documents).view(np.uint8)
    distances: np.ndarray = np.unpackbits(np.bitwise_xor(docs, q), axis=-1).sum(axis=-1)
    return distances
