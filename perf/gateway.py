"""What the HTTP gateway costs: passages through it against the client straight to Triton, one table.

    .venv/bin/python perf/gateway.py [--preset small|full] [--seconds 20] [--concurrency 16]

Starts a real Triton and the gateway on loopback, then alternates four ways of embedding the same
~256-token passages, one passage per request, `--concurrency` requests in flight: the async client
over gRPC (dense, then dense+sparse) and the gateway over HTTP (OpenAI `/v1/embeddings` for dense,
`/v1/m3/embed` for dense+sparse). Each way runs twice, alternating, and the better run is kept.
Bounded in time; loopback only.
"""

from __future__ import annotations

import asyncio
import datetime
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from perf.common import benchmark_checkpoint, embed_server, machine, parser, publish, work_folder
from perf.corpus import make_texts

REPO = Path(__file__).resolve().parent.parent

Send = Callable[[str], Awaitable[None]]


async def drive(send: Send, texts: list[str], concurrency: int, seconds: float) -> tuple[float, float, float]:
    """(texts/s, p50 ms, p95 ms) of `concurrency` workers sending one text each until `seconds` pass."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await send(texts[index % len(texts)])
            latencies.append(time.perf_counter() - start)
            index += concurrency

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return len(ordered) / elapsed, statistics.median(ordered) * 1e3, ordered[int(0.95 * (len(ordered) - 1))] * 1e3


async def measure(grpc_url: str, gateway_url: str, texts: list[str], concurrency: int,
                  seconds: float) -> dict[str, tuple[float, float, float]]:
    import httpx

    from bge_m3_client import AsyncBGEM3Client

    async with AsyncBGEM3Client(grpc_url, protocol="grpc", concurrency=concurrency) as client, \
            httpx.AsyncClient(base_url=gateway_url, timeout=120,
                              limits=httpx.Limits(max_connections=concurrency)) as http:
        async def direct_dense(text: str) -> None:
            await client.encode([text], is_passage=True, return_sparse=False)

        async def direct_both(text: str) -> None:
            await client.encode([text], is_passage=True)

        async def openai_dense(text: str) -> None:
            (await http.post("/v1/embeddings", json={"input": [text]})).raise_for_status()

        async def native_both(text: str) -> None:
            (await http.post("/v1/m3/embed", json={"texts": [text], "mode": "passage"})).raise_for_status()

        ways: dict[str, Send] = {"client -> Triton (gRPC), dense": direct_dense,
                                 "gateway /v1/embeddings (OpenAI), dense": openai_dense,
                                 "client -> Triton (gRPC), dense+sparse": direct_both,
                                 "gateway /v1/m3/embed, dense+sparse": native_both}
        await drive(direct_both, texts, concurrency, min(seconds, 5))  # warm-up
        best: dict[str, tuple[float, float, float]] = {}
        for _ in range(2):
            for name, send in ways.items():
                result = await drive(send, texts, concurrency, seconds)
                print(f"[gateway perf] {name}: {result[0]:.2f} texts/s, p50 {result[1]:.1f} ms", flush=True)
                if name not in best or result[0] > best[name][0]:
                    best[name] = result
        return best


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--seconds", type=float, default=20.0)
    options.add_argument("--concurrency", type=int, default=16)
    args = options.parse_args()

    from bge_m3_triton.core.tokens import load_tokenizer
    from bge_m3_triton.ops.processes import Gateway

    checkpoint = benchmark_checkpoint(args.preset)
    work = work_folder("gateway")
    texts = make_texts(load_tokenizer(checkpoint), 64, 256, seed=2)
    server = embed_server(checkpoint, work)
    try:
        gateway = Gateway(server.grpc, work / "gateway.log")
        try:
            best = asyncio.run(measure(server.grpc, gateway.url, texts, args.concurrency, args.seconds))
        finally:
            gateway.stop()
    finally:
        server.stop()
    lines = [f"# gateway overhead {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"Machine: {machine()}; preset `{args.preset}`, dtype auto; 64 passages of ~256 "
             f"tokens, one per request, concurrency {args.concurrency}, {args.seconds:g} s per run, best of 2.", "",
             "| path | texts/s | p50 ms | p95 ms | throughput vs direct | p50 vs direct |", "|---|---|---|---|---|---|"]
    pairs = {"gateway /v1/embeddings (OpenAI), dense": "client -> Triton (gRPC), dense",
             "gateway /v1/m3/embed, dense+sparse": "client -> Triton (gRPC), dense+sparse"}
    for name, (rate, p50, p95) in best.items():
        base = best.get(pairs.get(name, name))
        versus = f"{rate / base[0]:.1%} | {p50 - base[1]:+.1f} ms" if base and name in pairs else "— | —"
        lines.append(f"| {name} | {rate:.2f} | {p50:.1f} | {p95:.1f} | {versus} |")
    text = "\n".join(lines)
    publish(text, args.out, f"gateway-{args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
