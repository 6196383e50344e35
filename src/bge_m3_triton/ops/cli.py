"""`bge-m3-triton`: serve, render, make-test-model, health, info, settings."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bge_m3_triton.core.settings import SETTINGS, Setting, SettingsError, markdown_table
from bge_m3_triton.ops.render import Deployment, deployment_from_env


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
    serve.add_argument("--watchdog-seconds", type=float, default=30.0,
                       help="probe the embed model with a real request this often, and exit non-zero when it stops "
                            "answering, so a restart policy restarts the server (0: off; docs/reliability.md)")

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

    info = commands.add_parser("info", help="print the settings each served model runs with (JSON)")
    info.add_argument("--url", default="localhost:8000", help="Triton's HTTP address")

    commands.add_parser("settings", help="print the settings table (Markdown, as in the README)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `bge-m3-triton` command."""
    args = build_parser().parse_args(argv)
    if args.command == "make-test-model":
        from bge_m3_triton.ops.testmodel import make_test_model

        print(make_test_model(args.folder, args.preset, args.seed, args.reranker, args.format))
        return 0
    if args.command == "health":
        return _health(args.url, args.timeout)
    if args.command == "info":
        return _info(args.url)
    if args.command == "settings":
        print(markdown_table(), end="")
        return 0
    from bge_m3_triton.ops import launcher

    deployment = deployment_from_args(args)
    source = args.model_repository or launcher.default_model_repository()
    if args.command == "render":
        from bge_m3_triton.ops.render import render_repository

        print(render_repository(source, args.target, deployment))
        return 0
    options = launcher.ServerOptions(http_port=args.http_port, grpc_port=args.grpc_port,
                                     metrics_port=args.metrics_port, host=args.host, log_verbose=args.log_verbose,
                                     extra_args=list(args.triton_arg), gateway_port=args.gateway_port,
                                     gateway_args=list(args.gateway_arg), watchdog_s=args.watchdog_seconds)
    return launcher.serve(deployment, options, args.workdir, source)


def _deployment_args(parser: argparse.ArgumentParser) -> None:
    """One flag per setting of the table (`bge_m3_triton.core.settings.SETTINGS`)."""
    for setting in SETTINGS:
        if not setting.flag:
            continue
        environment = f" [env: {', '.join(setting.env)}]" if setting.env else ""
        parser.add_argument(setting.option, dest=setting.name, metavar=setting.name.upper() if not setting.choices
                            else None, choices=setting.choices or None,
                            type=functools.partial(_flag_value, setting),
                            help=f"{setting.help} (default {setting.default!r}){environment}")
    parser.add_argument("--model-repository", type=Path, help="the source model repository")
    parser.add_argument("--models", help="comma-separated models to serve (default: bge_m3, bge_m3_rerank and, "
                                         "with --reranker, bge_reranker)")


def _flag_value(setting: Setting, raw: str) -> Any:
    try:
        return setting.parse(raw, setting.option)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def deployment_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Deployment:
    """Environment variables first, command-line flags over them."""
    deployment = deployment_from_env(os.environ if env is None else env)
    for setting in SETTINGS:
        value = getattr(args, setting.name, None)
        if value is not None:
            setattr(deployment, setting.name, value)
    if args.models:
        deployment.only_models = [name.strip() for name in args.models.split(",") if name.strip()]
    return deployment


def _info(url: str) -> int:
    import json

    import tritonclient.http as http

    from bge_m3_client.contract import config_parameters
    from bge_m3_triton.core.settings import ALL_MODELS

    client = http.InferenceServerClient(url)
    try:
        report = {}
        for name in ALL_MODELS:
            if not client.is_model_ready(name):
                continue
            config = client.get_model_config(name)
            batching = config.get("dynamic_batching", {})
            parameters = config_parameters(config)
            report[name] = {
                "max_batch_size": config.get("max_batch_size"),
                # the weight-holding models' collector waits (`queue_delay_us`), the rerank model's Triton batcher
                "queue_delay_us": int(parameters.get("queue_delay_us",
                                                     batching.get("max_queue_delay_microseconds", 0))),
                "instances": [{"kind": g.get("kind"), "count": g.get("count"), "gpus": g.get("gpus", [])}
                              for g in config.get("instance_group", [])],
                "parameters": parameters,
            }
    except Exception as exc:
        print(f"cannot read the served models from {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(report, indent=2))
    return 0 if report else 1


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
