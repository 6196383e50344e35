"""`bge-m3-gateway`: serve the HTTP APIs with uvicorn in front of a bge-m3-triton server."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import uvicorn

from bge_m3_gateway.app import create_app
from bge_m3_gateway.settings import settings_from


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags (over `BGE_M3_GATEWAY_*` variables) and serve until stopped."""
    settings = settings_from(argv, os.environ)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
