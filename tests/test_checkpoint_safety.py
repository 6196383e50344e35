"""Loading checkpoints: clear errors for missing or corrupt files, no pickled code executed, launcher exit codes."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_ports

from bge_m3_triton.core.checkpoint import CheckpointError, load_linear_head, resolve_checkpoint
from bge_m3_triton.core.m3 import M3Model
from bge_m3_triton.core.settings import ModelSettings


def copy_of(checkpoint: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint, target)
    return target


def test_missing_head_is_named(m3_checkpoint: Path, tmp_path: Path) -> None:
    folder = copy_of(m3_checkpoint, tmp_path)
    (folder / "sparse_linear.pt").unlink()
    with pytest.raises(CheckpointError, match="sparse_linear.pt"):
        M3Model.load(ModelSettings(model=str(folder), dtype="float32"))


def test_missing_weights_and_folder(m3_checkpoint: Path, tmp_path: Path) -> None:
    folder = copy_of(m3_checkpoint, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors nor pytorch_model.bin"):
        M3Model.load(ModelSettings(model=str(folder), dtype="float32"))
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nowhere"))


def test_unreachable_hub_id_says_how_to_use_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="local folder"):
        resolve_checkpoint("BAAI/no-such-model-here")


class Payload:
    """Unpickling this runs `touch` on a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "colbert_linear.pt"
    torch.save({"weight": torch.zeros(4, 4), "bias": Payload(marker)}, evil, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_linear_head(evil, 4, torch.float32, torch.device("cpu"))
    assert not marker.exists()


def test_corrupt_head_file(tmp_path: Path) -> None:
    broken = tmp_path / "sparse_linear.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="sparse_linear.pt"):
        load_linear_head(broken, 4, torch.float32, torch.device("cpu"))


@pytest.mark.server
def test_launcher_exits_non_zero_with_the_reason(m3_checkpoint: Path, tmp_path: Path) -> None:
    folder = copy_of(m3_checkpoint, tmp_path)
    (folder / "colbert_linear.pt").write_bytes(b"corrupt")
    http, grpc, metrics = free_ports(3)
    run = subprocess.run([sys.executable, "-m", "bge_m3_triton.ops.cli", "serve", "--model", str(folder),
                          "--host", "127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}",
                          f"--metrics-port={metrics}"], capture_output=True, text=True, timeout=180)
    assert run.returncode != 0
    assert "colbert_linear.pt" in run.stdout + run.stderr
