"""Progress of a bulk job: a tqdm bar (documents/s, tokens/s, ETA, errors) on a terminal, a plain
line every few seconds otherwise (logs, CI), and the summary at the end."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, TextIO


@dataclasses.dataclass
class Counts:
    """What a job has done so far."""

    embedded: int = 0
    skipped: int = 0  # already in the output
    failed: int = 0
    malformed: int = 0
    tokens: int = 0
    truncated: int = 0
    cut_colbert: int = 0

    def summary(self, seconds: float) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": round(seconds, 2),
                "documents_per_s": round(self.embedded / seconds, 2) if seconds > 0 else 0.0,
                "tokens_per_s": round(self.tokens / seconds, 1) if seconds > 0 else 0.0}


class Progress:
    """Reports `Counts` as they change."""

    def __init__(self, total: int | None, stream: TextIO | None = None, every_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.every_s = every_s
        self.started = time.monotonic()
        self._last = self.started
        self._bar: Any = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="doc", file=self.stream, dynamic_ncols=True, smoothing=0.1)

    def update(self, counts: Counts, step: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(step)
            self._bar.set_postfix(tokens_s=f"{counts.tokens / elapsed:,.0f}", failed=counts.failed, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            print(self.line(counts, elapsed), file=self.stream, flush=True)

    def line(self, counts: Counts, elapsed: float) -> str:
        done = counts.embedded + counts.skipped + counts.failed + counts.malformed
        rate = counts.embedded / elapsed
        left = f", ETA {(self.total - done) / rate:,.0f} s" if self.total and rate > 0 and done < self.total else ""
        of = f"/{self.total:,}" if self.total else ""
        return (f"[embed] {done:,}{of} documents: {counts.embedded:,} embedded, {counts.skipped:,} already done, "
                f"{counts.failed:,} failed, {counts.malformed:,} malformed; {rate:,.1f} docs/s, "
                f"{counts.tokens / elapsed:,.0f} tokens/s{left}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
