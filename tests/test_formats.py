"""Compact vector formats (bge_m3_client/formats.py): what each encodes, what decodes back, and what it costs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bge_m3_client import formats


def unit_rows(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [8, 32, 1024])
def test_the_binary_formats_are_the_packed_signs_as_cohere_and_sentence_transformers_define_them(dim: int) -> None:
    x = unit_rows(5, dim)
    ubinary, none = formats.encode(x, formats.UBINARY)
    assert none is None and ubinary.dtype == np.uint8 and ubinary.shape == (5, dim // 8)
    np.testing.assert_array_equal(ubinary, np.packbits(x > 0, axis=-1))
    binary, _ = formats.encode(x, formats.BINARY)
    np.testing.assert_array_equal(binary, (np.packbits(x > 0, axis=-1).astype(np.int16) - 128).astype(np.int8))
    for fmt, values in ((formats.UBINARY, ubinary), (formats.BINARY, binary)):
        np.testing.assert_array_equal(formats.decode(values, fmt), np.where(x > 0, 1.0, -1.0))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.sampled_from([8, 64, 1024])),
              elements=st.floats(-1, 1, width=32)))
@example(np.full((1, 8), 1.3e-44, dtype=np.float32))  # a subnormal peak: its step underflows float32
def test_int8_and_uint8_keep_each_vectors_direction(x: np.ndarray) -> None:
    """Per-vector symmetric scales: decoded vectors within half a step of the originals, so a vector of
    BGE-M3's width keeps cosine above 0.999; uint8 is int8 + 128 with the same scale."""
    for fmt in (formats.INT8, formats.UINT8):
        values, scale = formats.encode(x, fmt)
        assert scale is not None and scale.shape == (x.shape[0], 1) and values.dtype == formats.NUMPY_DTYPES[fmt]
        decoded = formats.decode(values, fmt, scale)
        assert np.all(np.abs(decoded - x) <= scale * 0.5 + 1e-7)
    int8, scale = formats.encode(x, formats.INT8)
    uint8, same = formats.encode(x, formats.UINT8)
    np.testing.assert_array_equal(uint8.astype(np.int16) - 128, int8)
    np.testing.assert_array_equal(scale, same)


def test_cosine_to_float32_at_bge_m3s_width() -> None:
    x = unit_rows(200, 1024, seed=1)
    for fmt, bound in ((formats.FLOAT16, 0.99999), (formats.INT8, 0.999), (formats.UINT8, 0.999)):
        values, scale = formats.encode(x, fmt)
        decoded = formats.decode(values, fmt, scale)
        cosine = (decoded * x).sum(1) / np.linalg.norm(decoded, axis=1)
        assert cosine.min() >= bound, (fmt, cosine.min())


def test_each_format_shrinks_the_bytes_as_its_dtype_says() -> None:
    x = unit_rows(64, 1024)
    sizes = {fmt: formats.encode(x, fmt)[0].nbytes + (64 * 4 if fmt in formats.SCALED else 0)
             for fmt in formats.FORMATS}
    assert {fmt: size / sizes["float32"] for fmt, size in sizes.items()} == pytest.approx(
        {"float32": 1, "float16": 0.5, "int8": 0.25 + 1 / 1024, "uint8": 0.25 + 1 / 1024, "binary": 1 / 32,
         "ubinary": 1 / 32})
    assert all(formats.bytes_per_vector(fmt, 1024) * 64 == size for fmt, size in sizes.items())


def test_hamming_distance_ranks_like_the_signs_agreement() -> None:
    x = unit_rows(10, 1024, seed=2)
    packed, _ = formats.encode(x, formats.UBINARY)
    distances = formats.hamming(packed[0], packed)
    signs = np.where(x > 0, 1, -1)
    assert distances[0] == 0
    np.testing.assert_array_equal(distances, (signs != signs[0]).sum(axis=1))
    as_int8, _ = formats.encode(x, formats.BINARY)
    np.testing.assert_array_equal(formats.hamming(as_int8[0], as_int8), distances)


def test_an_unknown_format_and_a_width_that_cannot_pack_are_refused() -> None:
    with pytest.raises(ValueError, match="must be one of float32, float16, int8, uint8, binary, ubinary"):
        formats.check("int4", "dense_format")
    with pytest.raises(ValueError, match="no multiple of 8"):
        formats.encode(np.ones((1, 12), np.float32), formats.BINARY)
