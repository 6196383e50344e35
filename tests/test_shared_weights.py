"""CPU instances map one shared copy of the converted weights, and serve the same numbers from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bge_m3_triton.core import shared_weights
from bge_m3_triton.core.cross_encoder import CrossEncoder
from bge_m3_triton.core.m3 import M3Model
from bge_m3_triton.core.settings import ModelSettings

TEXTS = ["a short query", "ein etwas längerer Absatz über Suchmaschinen und Vektoren"]


def _mapped_files(model: object) -> set[str]:
    """The files whose mappings back the model's parameters (via /proc/self/maps)."""
    import torch

    params = [p for p in model.parameters() if isinstance(p, torch.Tensor)]  # type: ignore[attr-defined]
    addresses = [p.untyped_storage().data_ptr() for p in params]
    files = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if any(start <= a < end for a in addresses):
            files.add(" ".join(fields[5:]))  # a replaced file shows as "PATH (deleted)"
    return files


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_shared_weights_are_mapped_once_and_give_the_same_numbers(
        m3_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    monkeypatch.setenv("BGE_M3_SHARED_WEIGHTS_DIR", str(tmp_path))
    private = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype=dtype, device="cpu", share_weights="off",
                                                       compile="off", engine="torch"))
    first = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype=dtype, device="cpu", compile="off",
                                       engine="torch"))
    second = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype=dtype, device="cpu", compile="off",
                                        engine="torch"))
    files = sorted(tmp_path.glob("*.pt"))
    assert len(files) == 1, files  # written once, by the first instance
    assert not list(tmp_path.glob(".*.tmp"))  # (the lock file `.KEY.lock` stays)
    assert _mapped_files(second.encoder) == {str(files[0])}
    assert str(files[0]) not in _mapped_files(private.encoder)
    assert next(second.encoder.parameters()).dtype == private.dtype
    expected = private.encode(TEXTS, [64, 64])
    for model in (first, second):
        for got, want in zip(model.encode(TEXTS, [64, 64]), expected):
            np.testing.assert_array_equal(got.dense, want.dense)
            np.testing.assert_array_equal(got.colbert, want.colbert)
            np.testing.assert_array_equal(got.sparse_weights, want.sparse_weights)


@pytest.mark.slow
def test_each_dtype_and_model_kind_has_its_own_file_and_int8_is_private(
        m3_checkpoint: Path, reranker_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGE_M3_SHARED_WEIGHTS_DIR", str(tmp_path))
    M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="float32", device="cpu"))
    M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="bfloat16", device="cpu", compile="off", engine="torch"))
    M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="int8", device="cpu", engine="torch"))
    cross = CrossEncoder.load(ModelSettings(model=str(reranker_checkpoint), dtype="float32", device="cpu"))
    assert len(list(tmp_path.glob("*.pt"))) == 3
    assert cross.score([[0, 10, 2, 2, 11, 2]], [True])[0] == pytest.approx(
        CrossEncoder.load(ModelSettings(model=str(reranker_checkpoint), dtype="float32", device="cpu",
                                        share_weights="off")).score([[0, 10, 2, 2, 11, 2]], [True])[0], abs=0)


def _load_and_report(folder: str, start: float, found: dict[int, str], index: int) -> None:
    import time

    import torch

    from bge_m3_triton.core.shared_weights import share_weights

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])
    time.sleep(max(0.0, start - time.time()))  # both processes reach share_weights together
    share_weights(model, "concurrent", Path(folder))
    found[index] = " ".join(sorted(_mapped_files(model)))


def test_instances_loading_at_once_map_the_same_file(tmp_path: Path) -> None:
    import multiprocessing
    import os
    import time

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        found = manager.dict()
        start = time.time() + 3
        workers = [context.Process(target=_load_and_report, args=(str(tmp_path), start, found, i)) for i in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
        mapped = dict(found)
    file = str(tmp_path / "concurrent.pt")
    assert mapped[0] == mapped[1] == file  # not "(deleted)": nobody replaced a file another had mapped
    assert os.path.isfile(file)


def _resident_kib(path: Path) -> int:
    """This process's resident KiB of the mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path.resolve())
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_released_pages_fault_back_with_the_same_weights(
        m3_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`release_pages` (run after compiling, whose graphs keep their own packed copy) drops the resident
    pages of the mapped file and nothing else: an eager model reading them again gets the same numbers."""
    monkeypatch.setenv("BGE_M3_SHARED_WEIGHTS_DIR", str(tmp_path))
    model = M3Model.load(ModelSettings(model=str(m3_checkpoint), dtype="float32", device="cpu", compile="off"))
    (path,) = tmp_path.glob("*.pt")
    before = model.encode(TEXTS, [64, 64])
    resident = _resident_kib(path)
    assert resident > 0
    released = shared_weights.release_pages(path)
    assert released >= resident * 1024
    assert _resident_kib(path) < resident
    for got, want in zip(model.encode(TEXTS, [64, 64]), before):
        np.testing.assert_array_equal(got.dense, want.dense)
        np.testing.assert_array_equal(got.colbert, want.colbert)
        np.testing.assert_array_equal(got.sparse_weights, want.sparse_weights)
    assert shared_weights.release_pages(tmp_path / "not-mapped.pt") == 0
