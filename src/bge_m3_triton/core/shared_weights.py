"""One copy of a CPU model's weights in memory, however many model instances (processes) serve it.

Triton's Python backend runs each model instance in its own process, so two instances would hold two
private copies of the converted weights. Instead, the first instance to load a checkpoint in a dtype
writes its converted state dict once to a file (`torch.save`, atomically renamed into place), and every
instance maps that file (`torch.load(mmap=True, weights_only=True)`) and points its parameters at the
mapping. The mapping is private copy-on-write and the weights are never written, so the instances share
the page cache's one copy. The file is named by a digest of the checkpoint's weight files (path, size,
mtime), the dtype and torch's version, so a changed checkpoint or torch gets a new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

LOG = logging.getLogger(__name__)
FOLDER_NAME = "bge-m3-triton-weights"


def weights_key(files: Iterable[Path], dtype: torch.dtype, what: str) -> str:
    """A digest naming one converted state dict: its source files, dtype, torch version and role."""
    digest = hashlib.sha256(f"{what}|{dtype}|{torch.__version__}".encode())
    for file in sorted(files):
        stat = file.stat()
        digest.update(f"|{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def default_folder() -> Path:
    """Where shared weight files live: `BGE_M3_SHARED_WEIGHTS_DIR`, else the temp folder."""
    return Path(os.environ.get("BGE_M3_SHARED_WEIGHTS_DIR") or Path(tempfile.gettempdir()) / FOLDER_NAME)


def share_weights(model: torch.nn.Module, key: str, folder: Path | None = None) -> Path:
    """Point `model`'s parameters and persistent buffers at the shared mapped copy for `key` (writing it
    first if no instance has); returns the file."""
    folder = default_folder() if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.pt"
    # Instances load at the same time: one writes while the others wait on the lock, then all map the
    # same file (two writers would each map their own, and the first one's would be replaced).
    with open(folder / f".{key}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
            os.close(handle)
            try:
                torch.save(model.state_dict(), temporary)
                os.replace(temporary, path)  # atomic: a reader sees the whole file or none
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
    state = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    model.load_state_dict(state, assign=True)
    LOG.info("weights mapped from %s (shared between the instances)", path)
    return path
