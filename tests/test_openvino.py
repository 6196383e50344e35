"""The OpenVINO engine (core/openvino_engine.py) against torch, the reference, on the tiny checkpoints: the
same outputs in fp32, in-process and through a real Triton, its IR built once and read back on restart, a
damaged IR rebuilt rather than trusted. Its bf16 and int8 through a real Triton are in test_precision.py; its
speed and fidelity on real weights in perf/ (docs/decisions/012-openvino-engine.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import Server, start_server
from reference import TEXTS

from bge_m3_client import BGEM3Client
from bge_m3_triton.core import openvino_engine
from bge_m3_triton.core.cross_encoder import CrossEncoder
from bge_m3_triton.core.m3 import M3Model
from bge_m3_triton.core.settings import ModelSettings

pytestmark = pytest.mark.skipif(not openvino_engine.available(), reason="openvino is not installed")


@pytest.fixture
def ir_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The IR cache lives beside the shared weight files: a folder of this test's own."""
    monkeypatch.setenv("BGE_M3_SHARED_WEIGHTS_DIR", str(tmp_path))
    return tmp_path / "openvino"


def m3(checkpoint: Path, engine: str, dtype: str = "float32") -> M3Model:
    return M3Model.load(ModelSettings(model=str(checkpoint), engine=engine, dtype=dtype, device="cpu",
                                      share_weights="off"))


def embed(model: M3Model) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    results = model.encode(TEXTS, [512] * len(TEXTS))
    return [(r.dense, r.sparse_ids, r.sparse_weights, r.colbert) for r in results]  # type: ignore[misc]


def assert_close(got: list[tuple[np.ndarray, ...]], expected: list[tuple[np.ndarray, ...]], tolerance: float) -> None:
    for got_row, expected_row in zip(got, expected, strict=True):
        dense, ids, weights, colbert = got_row
        assert np.abs(dense - expected_row[0]).max(initial=0.0) <= tolerance
        assert dict(zip(ids.tolist(), weights.tolist())).keys() == dict(zip(expected_row[1].tolist(),
                                                                            expected_row[2].tolist())).keys()
        assert np.abs(weights - expected_row[2]).max(initial=0.0) <= tolerance
        assert colbert.shape == expected_row[3].shape
        assert np.abs(colbert - expected_row[3]).max(initial=0.0) <= tolerance


def test_fp32_gives_torchs_outputs_and_its_ir_is_built_once(m3_checkpoint: Path, ir_folder: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    reference = embed(m3(m3_checkpoint, "torch"))
    engine = m3(m3_checkpoint, "openvino")
    assert isinstance(engine.encoder, openvino_engine.OpenVINOModel)
    assert_close(embed(engine), reference, 1e-5)
    built = sorted(ir_folder.glob("*.xml"))
    assert len(built) == 1 and built[0].with_suffix(".bin").stat().st_size > 0

    def no_conversion(*args: object) -> None:
        raise AssertionError("the IR was converted again although an intact one is on disk")

    monkeypatch.setattr(openvino_engine, "convert", no_conversion)
    assert_close(embed(m3(m3_checkpoint, "openvino")), reference, 1e-5)  # a restart reads it back


def test_a_damaged_ir_is_rebuilt_not_trusted(m3_checkpoint: Path, ir_folder: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    reference = embed(m3(m3_checkpoint, "openvino"))
    conversions: list[str] = []
    convert = openvino_engine.convert
    monkeypatch.setattr(openvino_engine, "convert", lambda model, output: conversions.append(output) or
                        convert(model, output))
    (xml,) = ir_folder.glob("*.xml")
    weights = xml.with_suffix(".bin")
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte in the weights: loads, but computes wrong
    weights.write_bytes(bytes(damaged))
    assert not openvino_engine._intact(xml)
    assert_close(embed(m3(m3_checkpoint, "openvino")), reference, 1e-6)
    assert conversions == ["last_hidden_state"] and openvino_engine._intact(xml)
    xml.with_suffix(".json").unlink()  # a build cut off before its manifest was written
    embed(m3(m3_checkpoint, "openvino"))
    assert len(conversions) == 2


def test_a_changed_checkpoint_or_precision_is_another_ir(m3_checkpoint: Path, tmp_path: Path) -> None:
    files = [m3_checkpoint / "config.json"]
    key = openvino_engine.cache_key(files, "float32", "last_hidden_state")
    assert key != openvino_engine.cache_key(files, "int8", "last_hidden_state")
    assert key != openvino_engine.cache_key(files, "float32", "logits")
    copy = tmp_path / "config.json"
    copy.write_bytes(files[0].read_bytes() + b"\n")
    assert key != openvino_engine.cache_key([copy], "float32", "last_hidden_state")


def test_the_cross_encoder_scores_as_torch_does(reranker_checkpoint: Path, ir_folder: Path) -> None:
    def scores(engine: str) -> list[float]:
        model = CrossEncoder.load(ModelSettings(model=str(reranker_checkpoint), engine=engine, dtype="float32",
                                                device="cpu", share_weights="off"))
        pairs = model.pair_ids(["what is bge-m3?"] * len(TEXTS), TEXTS, 512, 64)
        return model.score(pairs, [False] * len(TEXTS))

    assert np.allclose(scores("openvino"), scores("torch"), atol=1e-5)


def test_calibration_text_is_shipped_multilingual_long_and_short() -> None:
    texts = openvino_engine.calibration_texts()
    assert len(texts) >= openvino_engine.CALIBRATION_ROWS
    lengths = sorted(len(text) for text in texts)
    assert lengths[0] < 80 and lengths[-1] > 1000
    assert any(ord(ch) > 0x3000 for text in texts for ch in text)  # CJK among them
    assert any("\u0400" <= ch <= "\u04ff" for text in texts for ch in text)  # Cyrillic


@pytest.mark.server
def test_served_through_triton_in_fp32_it_equals_torch_and_a_restart_reads_its_ir_back(
        server: Server, tmp_path: Path, m3_checkpoint: Path) -> None:
    """The main test server runs torch fp32; this one the OpenVINO engine in fp32, twice over one IR folder."""
    def served(url: str) -> list[tuple[np.ndarray, ...]]:
        with BGEM3Client(url) as client:
            results = client.encode(TEXTS, is_passage=True, return_colbert=True)
        return [(r.dense, np.asarray(r.sparse["indices"]), np.asarray(r.sparse["values"], dtype=np.float32),
                 r.colbert) for r in results]

    args = ["--model", str(m3_checkpoint), "--dtype", "float32", "--engine", "openvino", "--models", "bge_m3"]
    env = {"BGE_M3_SHARED_WEIGHTS_DIR": str(tmp_path / "shared")}
    reference = served(server.http)
    for start in ("first", "restart"):
        (tmp_path / start).mkdir()
        running = start_server(tmp_path / start, args, ["bge_m3"], env=env)
        try:
            assert_close(served(running.http), reference, 1e-5)
        finally:
            assert running.stop() == 0
        log = running.log.read_text()
        assert "on OpenVINO's CPU plugin as float32" in log
        assert ("OpenVINO IR built" in log) == (start == "first") and ("IR read back" in log) == (start == "restart")
