#!/usr/bin/env bash
# Set up .venv if needed, then serve BGE-M3 (BAAI/bge-m3 by default) on ports 8000/8001/8002 (Triton)
# and the HTTP gateway on 8080 (OpenAI, TEI, Cohere/Jina, native APIs; --gateway-port 0 turns it off).
# Every `bge-m3-triton serve` flag passes through, e.g. `scripts/serve.sh --model ./my-checkpoint`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/bge-m3-triton serve --gateway-port "${BGE_M3_GATEWAY_PORT:-8080}" "$@"
