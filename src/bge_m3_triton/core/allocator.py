"""Keep the C allocator from handing a forward pass's buffers back to the kernel after every pass.

glibc's malloc serves large blocks (the feed-forward activations: 16 MB for 2,048 bf16 tokens of a
4,096-wide layer) with `mmap` and trims the heap top when they are freed, so every forward pass
page-faults its activations in again: ~25,000 minor faults (100 MB zeroed) per 8-passage pass of the
6-layer model, 3% of its time (docs/decisions/006-allocator.md). Raising the trim threshold and pinning the
mmap threshold at glibc's own upper limit keeps freed blocks in the heap for the next pass, as jemalloc
or tcmalloc would, without preloading a library into Triton's stub process. Resident memory then stays
at the peak of a pass instead of dropping back between passes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

LOG = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit (half its 64 MB heap size)
TRIM_THRESHOLD = 1 << 30  # freed memory at the heap top is kept up to this much

_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for repeated large tensors, once per process; False where it is not glibc
    or glibc refused a setting."""
    global _applied
    if _applied:
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    accepted = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                    and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    if not accepted:
        LOG.warning("glibc refused the malloc thresholds; forward passes keep page-faulting their buffers")
    _applied = accepted
    return accepted
