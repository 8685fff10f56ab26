"""Tool calls to a stdio MCP server: directly, and through the gateway, in one run.

Run by hand from a checkout with the gateway installed:

    python bench/bench_stdio.py [--calls N] [--concurrency C] [--rounds R] [--workers W]

The server is `tests/upstreams/stdio_server.py` (the official SDK's `MCPServer` over
stdio), and every call is its `echo` tool, made with the official SDK's `Client`. Three
targets take turns, so that a slow moment of a shared machine meets them all:

- `direct`: the SDK's stdio client launches the server and calls it, as a desktop client
  would without the gateway;
- `gateway`: the SDK's Streamable HTTP client calls the gateway (gunicorn, W workers), whose
  stdio backend runs the same server (`STDIO_MODE=shared`: one process behind all workers);
- `bridge`: the SDK's stdio client launches `aio-mcp-gateway bridge`, which carries the
  calls to that gateway: a stdio client's whole path through the gateway.

Each round opens a fresh client per target, warms it up, then makes N calls, C at a time,
checking every answer. The table shows calls/s and latency; the medians' ratios to
`direct` follow. The exit status is 0 when every call of every run came back right, 1 when
one did not, 2 when the set-up failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from common import (
    GATEWAY_TOOL,
    REPO,
    TOOL,
    UPSTREAM_NAME,
    Gateway,
    add_upstream,
    run_benchmark,
    running_gateway,
    wait_until_callable,
)
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

STDIO_SERVER = REPO / "tests" / "upstreams" / "stdio_server.py"
BRIDGE = Path(sys.executable).with_name("aio-mcp-gateway")
TARGETS = ("direct", "gateway", "bridge")
WARMUP_CALLS = 50


@dataclass(frozen=True)
class Figures:
    target: str
    round: int
    calls_per_second: float
    p50_ms: float
    p99_ms: float
    wrong: int


def server_parameters() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(STDIO_SERVER)])


@asynccontextmanager
async def connected(target: str, gateway: Gateway, token: str) -> AsyncIterator[Client]:
    if target == "direct":
        transport = stdio_client(server_parameters())
        async with Client(transport, mode="legacy") as client:
            yield client
    elif target == "gateway":
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30.0) as session:
            transport = streamable_http_client(f"{gateway.url}/mcp", http_client=session)
            async with Client(transport, mode="legacy") as client:
                yield client
    else:
        bridge = StdioServerParameters(
            command=str(BRIDGE),
            args=["bridge", "--url", f"{gateway.url}/mcp"],
            env={"GATEWAY_TOKEN": token, "LOG_LEVEL": "warning"},
        )
        async with Client(stdio_client(bridge), mode="legacy") as client:
            yield client


async def call_many(
    client: Client, tool: str, calls: int, concurrency: int
) -> tuple[list[float], int]:
    """`calls` echo calls, `concurrency` at a time: each one's seconds, and how many came
    back wrong."""
    numbers = iter(range(calls))
    latencies: list[float] = []
    wrong = 0

    async def caller() -> None:
        nonlocal wrong
        for number in numbers:
            text = f"call {number}"
            started = time.perf_counter()
            result = await client.call_tool(tool, {"text": text})
            latencies.append(time.perf_counter() - started)
            content = result.content
            if result.is_error or not content or getattr(content[0], "text", None) != text:
                wrong += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, wrong


async def one_run(
    target: str, round_number: int, gateway: Gateway, token: str, calls: int, concurrency: int
) -> Figures:
    tool = TOOL if target == "direct" else GATEWAY_TOOL
    async with connected(target, gateway, token) as client:
        await call_many(client, tool, WARMUP_CALLS, concurrency)
        started = time.perf_counter()
        latencies, wrong = await call_many(client, tool, calls, concurrency)
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Figures(
        target,
        round_number,
        calls / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        wrong,
    )


def register(gateway: Gateway) -> None:
    body = {
        "name": UPSTREAM_NAME,
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(STDIO_SERVER)],
    }
    # Registering starts the server and lists its tools: slow on a busy machine.
    add_upstream(gateway, body, timeout=60.0)


def print_figures(runs: list[Figures], calls: int, concurrency: int, workers: int) -> bool:
    print(f"{calls} echo calls per run, {concurrency} at a time; gateway: {workers} workers\n")
    print(f"{'target':<8} {'round':>6} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'wrong':>6}")
    for run in runs:
        print(
            f"{run.target:<8} {run.round:>6} {run.calls_per_second:>9.0f} "
            f"{run.p50_ms:>8.2f} {run.p99_ms:>8.2f} {run.wrong:>6}"
        )
    medians = {
        target: statistics.median(r.calls_per_second for r in runs if r.target == target)
        for target in TARGETS
    }
    for target in TARGETS:
        print(f"{target:<8} {'median':>6} {medians[target]:>9.0f}")
    print()
    for target in TARGETS[1:]:
        print(f"{target} / direct: {medians[target] / medians['direct']:.2f}")
    return all(run.wrong == 0 for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per run (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls at a time (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per target (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    args = parser.parse_args()

    def body(workdir: Path) -> bool:
        settings = {"STDIO_COMMANDS": sys.executable, "STDIO_RUNTIME_DIR": str(workdir / "stdio")}
        with running_gateway(workdir, args.workers, settings=settings) as gateway:
            register(gateway)
            token = gateway.token("bench-user")
            wait_until_callable(gateway, {"Authorization": f"Bearer {token}"}, timeout=30)
            runs = asyncio.run(measure(gateway, token, args))
        return print_figures(runs, args.calls, args.concurrency, args.workers)

    return run_benchmark("bench_stdio", body, needs_hey=False)


async def measure(gateway: Gateway, token: str, args: argparse.Namespace) -> list[Figures]:
    runs = []
    for round_number in range(1, args.rounds + 1):
        for target in TARGETS:
            runs.append(
                await one_run(target, round_number, gateway, token, args.calls, args.concurrency)
            )
    return runs


if __name__ == "__main__":
    sys.exit(main())
