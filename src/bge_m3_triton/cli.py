"""`bge-m3-triton`: serve, render, make-test-model, health."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bge_m3_triton.render import Deployment, deployment_from_env


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    parser = argparse.ArgumentParser(prog="bge-m3-triton", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start tritonserver with the BGE-M3 models")
    _deployment_args(serve)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--host", default="0.0.0.0", help="bind address for HTTP and gRPC (default 0.0.0.0)")
    serve.add_argument("--workdir", type=Path, help="where the rendered repository goes (default: a temp dir)")
    serve.add_argument("--log-verbose", type=int, default=0)
    serve.add_argument("--triton-arg", action="append", default=[], metavar="ARG",
                       help="pass an argument to tritonserver, e.g. --triton-arg=--http-restricted-api=...")
    serve.add_argument("--gateway-port", type=int, default=0,
                       help="also serve the HTTP gateway (OpenAI, TEI, Cohere, native APIs) on this port; 0: off")
    serve.add_argument("--gateway-arg", action="append", default=[], metavar="ARG",
                       help="pass an argument to bge-m3-gateway, e.g. --gateway-arg=--max-inputs=256")

    render = commands.add_parser("render", help="write the rendered model repository and stop")
    _deployment_args(render)
    render.add_argument("target", type=Path)

    make = commands.add_parser("make-test-model", help="write a random-weight checkpoint in BGE-M3's layout")
    make.add_argument("folder", type=Path)
    make.add_argument("--preset", choices=("tiny", "small", "full"), default="tiny")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--reranker", action="store_true", help="a cross-encoder (bge-reranker-v2-m3 layout)")
    make.add_argument("--format", choices=("safetensors", "bin"), default="safetensors")

    health = commands.add_parser("health", help="exit 0 when the embed model answers a real request")
    health.add_argument("--url", default="localhost:8000")
    health.add_argument("--timeout", type=float, default=10.0)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `bge-m3-triton` command."""
    args = build_parser().parse_args(argv)
    if args.command == "make-test-model":
        from bge_m3_triton.testmodel import make_test_model

        print(make_test_model(args.folder, args.preset, args.seed, args.reranker, args.format))
        return 0
    if args.command == "health":
        return _health(args.url, args.timeout)
    from bge_m3_triton import launcher

    deployment = deployment_from_args(args)
    source = args.model_repository or launcher.default_model_repository()
    if args.command == "render":
        from bge_m3_triton.render import render_repository

        print(render_repository(source, args.target, deployment))
        return 0
    options = launcher.ServerOptions(http_port=args.http_port, grpc_port=args.grpc_port,
                                     metrics_port=args.metrics_port, host=args.host, log_verbose=args.log_verbose,
                                     extra_args=list(args.triton_arg), gateway_port=args.gateway_port,
                                     gateway_args=list(args.gateway_arg))
    return launcher.serve(deployment, options, args.workdir, source)


def _deployment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="BGE-M3 checkpoint: hub id or folder (default BAAI/bge-m3)")
    parser.add_argument("--revision", help="hub revision of --model")
    parser.add_argument("--reranker", help="cross-encoder checkpoint (e.g. BAAI/bge-reranker-v2-m3) to serve too")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--instances", type=int, help="model instances (default 1)")
    parser.add_argument("--query-max-length", type=int)
    parser.add_argument("--passage-max-length", type=int)
    parser.add_argument("--max-batch-tokens", type=int, help="padded-token budget of one forward pass")
    parser.add_argument("--max-batch-size", type=int, help="texts per request and per dynamic batch")
    parser.add_argument("--queue-delay-us", type=int, help="dynamic batcher's max queue delay")
    parser.add_argument("--queue-timeout-us", type=int, help="reject requests queued longer than this")
    parser.add_argument("--max-queue-size", type=int, help="reject requests beyond this many queued")
    parser.add_argument("--torch-threads", type=int, help="intra-op threads per instance (default: cores/instances)")
    parser.add_argument("--model-repository", type=Path, help="the source model repository")
    parser.add_argument("--models", help="comma-separated models to serve (default: bge_m3, bge_m3_rerank and, "
                                         "with --reranker, bge_reranker)")


def deployment_from_args(args: argparse.Namespace) -> Deployment:
    """Environment variables first, command-line flags over them."""
    deployment = deployment_from_env(os.environ)
    for field in ("model", "revision", "reranker", "dtype", "device", "instances", "query_max_length",
                  "passage_max_length", "max_batch_tokens", "max_batch_size", "queue_delay_us",
                  "queue_timeout_us", "max_queue_size", "torch_threads"):
        value = getattr(args, field)
        if value is not None:
            setattr(deployment, field, value)
    if args.models:
        deployment.only_models = [name.strip() for name in args.models.split(",") if name.strip()]
    return deployment


def _health(url: str, timeout: float) -> int:
    from bge_m3_client import BGEM3Client, BGEM3Error

    try:
        result = BGEM3Client(url=url, timeout=timeout, retries=0).encode(["health check"], return_sparse=False)
    except BGEM3Error as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"healthy: dense dim {result[0].dense.shape[0] if result[0].dense is not None else 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
