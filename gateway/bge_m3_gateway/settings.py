"""The gateway's settings: one dataclass, filled from flags over `BGE_M3_GATEWAY_*` environment variables."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

ENV_PREFIX = "BGE_M3_GATEWAY_"
API_KEY_ENV = "BGE_M3_API_KEY"


@dataclasses.dataclass(frozen=True)
class GatewaySettings:
    """Where Triton is, where the gateway listens, and the limits it enforces on every request."""

    triton: str = "localhost:8001"
    protocol: str = "grpc"
    host: str = "0.0.0.0"
    port: int = 8080
    api_key: str = ""
    max_inputs: int = 2048
    max_body_bytes: int = 16 << 20
    request_timeout: float = 30.0
    retries: int = 0
    concurrency: int = 64
    cors_origins: str = ""
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be grpc or http, got {self.protocol!r}")
        for name in ("port", "max_inputs", "max_body_bytes", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be positive, got {self.request_timeout}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries}")

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins CORS allows (none: CORS off)."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


_HELP = {
    "triton": "Triton's address, HOST:PORT (gRPC 8001 by default; HTTP 8000 with --protocol http)",
    "protocol": "how the gateway talks to Triton",
    "host": "bind address", "port": "HTTP port",
    "api_key": f"require 'Authorization: Bearer KEY' on API routes (env {API_KEY_ENV})",
    "max_inputs": "most texts (or documents) in one request",
    "max_body_bytes": "largest request body, bytes",
    "request_timeout": "seconds a request may take before it is answered 504",
    "retries": "retries of Triton calls that were rejected or could not connect (0: answer 429/503 at once)",
    "concurrency": "most Triton requests in flight from this gateway",
    "cors_origins": "comma-separated origins allowed by CORS (default: CORS off)",
    "log_level": "uvicorn's log level",
}


def build_parser() -> argparse.ArgumentParser:
    """`bge-m3-gateway`'s flags, one per settings field."""
    parser = argparse.ArgumentParser(prog="bge-m3-gateway", description="OpenAI-, TEI-, Cohere- and native "
                                     "BGE-M3 HTTP APIs in front of a bge-m3-triton server.")
    for field in dataclasses.fields(GatewaySettings):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=_kind(field), default=None, help=_HELP[field.name],
                            choices=("grpc", "http") if field.name == "protocol" else None)
    return parser


def settings_from(argv: Sequence[str] | None, env: Mapping[str, str]) -> GatewaySettings:
    """Defaults, then `BGE_M3_GATEWAY_<FIELD>` (and `BGE_M3_API_KEY`) variables, then flags."""
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(GatewaySettings):
        names = [ENV_PREFIX + field.name.upper()] + ([API_KEY_ENV] if field.name == "api_key" else [])
        raw = next((env[name] for name in names if env.get(name, "").strip()), None)
        if raw is not None:
            try:
                values[field.name] = _kind(field)(raw.strip())
            except ValueError:
                raise SystemExit(f"bge-m3-gateway: environment variable {names[0]} has a bad value {raw!r}") from None
        if getattr(args, field.name) is not None:
            values[field.name] = getattr(args, field.name)
    try:
        return GatewaySettings(**values)
    except ValueError as exc:
        raise SystemExit(f"bge-m3-gateway: {exc}") from None


def _kind(field: dataclasses.Field[Any]) -> Any:
    return {"int": int, "float": float}.get(str(field.type), str)
