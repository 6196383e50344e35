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
    return files_key(f"{what}|{dtype}|{torch.__version__}", files)


def files_key(prefix: str, files: Iterable[Path]) -> str:
    """A digest of `prefix` and each source file's path, size and modification time (a changed checkpoint
    names another key; an unchanged one is not read)."""
    digest = hashlib.sha256(prefix.encode())
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


def release_pages(path: Path) -> int:
    """Drop this process's resident pages of the mapped weights `path` (`madvise(MADV_DONTNEED)` on each
    of its mappings); returns the bytes they spanned. The mappings stay: a page read again faults back
    in from the page cache or the file, with the same bytes, as the weights are never written. For a
    compiled model, whose graphs hold their own packed copy of the Linear weights and touch only the
    embedding rows they look up. Linux only; elsewhere it does nothing."""
    import ctypes

    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8").splitlines()
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    target, released = str(path.resolve()), 0
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] != target:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4) == 0:  # 4: MADV_DONTNEED
            released += end - start
    return released
