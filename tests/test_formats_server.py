"""Compact formats through a real Triton: what each format carries equals what formats.py defines on the
server's float32 vectors, and the bytes on the wire shrink as the dtype says."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as http
from conftest import Server
from reference import TEXTS

from bge_m3_client import BGEM3Client, InvalidInputError, formats
from bge_m3_client import contract as c

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def reference(server: Server) -> list:
    with BGEM3Client(server.grpc, protocol="grpc") as client:
        return client.encode(TEXTS, is_passage=True, return_colbert=True)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("fmt", ["float16", "int8", "uint8", "binary", "ubinary"])
def test_each_format_carries_the_float32_vectors(server: Server, reference: list, protocol: str, fmt: str) -> None:
    with BGEM3Client(server.url(protocol), protocol=protocol) as client:
        got = client.encode(TEXTS, is_passage=True, return_colbert=True, dense_format=fmt, colbert_format=fmt)
    for result, ref in zip(got, reference):
        for values, floats, scale in ((result.dense, ref.dense, result.dense_scale),
                                      (result.colbert, ref.colbert, result.colbert_scale)):
            assert values.dtype == formats.NUMPY_DTYPES[fmt]
            rows = np.atleast_2d(floats)
            if fmt == "float16":
                np.testing.assert_allclose(values.astype(np.float32), floats, atol=1e-3)
            elif fmt in formats.PACKED:  # exactly the packed signs of the float32 vectors
                np.testing.assert_array_equal(np.atleast_2d(values), formats.encode(rows, fmt)[0])
            else:  # int8, uint8: decoded as documented, cosine >= 0.99 to the float32 vectors
                decoded = np.atleast_2d(formats.decode(values, fmt, scale))
                cosine = (decoded * rows).sum(-1) / np.linalg.norm(decoded, axis=-1) / np.linalg.norm(rows, axis=-1)
                assert cosine.min() >= 0.99, cosine.min()


def wire_bytes(server: Server, fmt: str, outputs: list[str]) -> int:
    """The size of the HTTP response body for 8 passages' outputs in `fmt` (binary tensors)."""
    text = http.InferInput(c.TEXT, [len(TEXTS), 1], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object).reshape(-1, 1))
    asked = [http.InferRequestedOutput(name, binary_data=True) for name in outputs]
    parameters = {c.PARAM_MODE: "passage", c.PARAM_DENSE_FORMAT: fmt, c.PARAM_COLBERT_FORMAT: fmt}
    body, header_length = http.InferenceServerClient.generate_request_body([text], asked, parameters=parameters)
    headers = {"Inference-Header-Content-Length": str(header_length)} if header_length else {}
    reply = httpx.post(f"http://{server.http}/v2/models/{c.EMBED_MODEL}/infer", content=body, headers=headers,
                       timeout=60)
    assert reply.status_code == 200, reply.text
    return len(reply.content)


def test_the_bytes_on_the_wire_shrink_as_the_dtype_says(server: Server) -> None:
    colbert = [c.COLBERT, c.COLBERT_LENGTHS, c.COLBERT_SCALE]
    size = {fmt: wire_bytes(server, fmt, colbert) for fmt in formats.FORMATS}
    ratio = {fmt: n / size["float32"] for fmt, n in size.items()}
    print({fmt: round(r, 3) for fmt, r in ratio.items()})
    assert ratio["float16"] <= 0.55
    assert ratio["int8"] <= 0.30 and abs(size["uint8"] - size["int8"]) <= 8  # the header names another dtype
    assert ratio["binary"] <= 0.05 and ratio["ubinary"] <= 0.05


def test_a_bad_format_is_named_by_the_server(server: Server) -> None:
    raw = http.InferenceServerClient(server.http)
    text = http.InferInput(c.TEXT, [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"x"]], dtype=object))
    with pytest.raises(Exception, match="dense_format.*must be one of float32, float16"):
        raw.infer(c.EMBED_MODEL, [text], parameters={c.PARAM_DENSE_FORMAT: "int4"})
    raw.close()
    with BGEM3Client(server.http) as client, pytest.raises(InvalidInputError, match="dense_format"):
        client.encode(["x"], dense_format="int4")
