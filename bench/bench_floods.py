"""What floods from one client cost a gateway worker in memory, with the limits in force.

Run by hand from a checkout with the gateway installed:

    python bench/bench_floods.py [--sessions N] [--subjects K] [--batches B]
                                 [--big-inits I] [--floods F] [--flood-mb M]
                                 [--concurrency C]

One run starts our test MCP server, the misbehaving upstream of the tests (whose `flood`
tool answers M megabytes) and the gateway under gunicorn with ONE worker, JWT auth, SQLite,
the memory cache (so sessions live in the worker, where its RSS shows them) and the default
limits. Four floods follow, each from one token unless `--subjects` spreads the sessions:

  sessions    N `initialize` on /mcp
  batches     B batches of MAX_BATCH `tools/list` on one 2025-03-26 session, then one batch
              of 22,310 (the size that once made a 319 MB answer)
  big inits   I `initialize` whose `clientInfo` is 900 KB
  responses   F calls of a tool whose upstream answers M megabytes

For each it prints the answers by HTTP status and the worker's RSS from /proc: before,
the peak sampled every 20 ms while it ran, and settled (3 s after it ended).

The exit status is 0 when every flood ran, 2 when the set-up failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from common import (
    MCP_ACCEPT,
    REPO,
    BenchError,
    Gateway,
    add_upstream,
    initialize_message,
    open_session,
    register,
    run_benchmark,
    running_gateway,
    running_upstream,
    wait_until_callable,
)
from tests.upstreams.processes import UpstreamStartError, start_upstream, stop_upstream

from gateway.settings import Settings

MISBEHAVING = REPO / "tests" / "upstreams" / "misbehaving.py"
SETTLE_SECONDS = 3.0
LIMITS = (
    "MAX_REQUEST_BYTES",
    "MAX_BATCH",
    "MAX_RESPONSE_BYTES",
    "MAX_INITIALIZE_BYTES",
    "MAX_SESSIONS_PER_SUBJECT",
    "MAX_UPSTREAM_RESPONSE_BYTES",
    "MAX_SSE_LINE_BYTES",
)


def rss_kib(pid: int) -> tuple[int, int]:
    """The process's resident set and its peak so far (VmRSS, VmHWM), in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@contextmanager
def sampled_peak(pid: int) -> Iterator[list[int]]:
    """Sample the RSS every 20 ms while the block runs; the list holds the peak (KiB)."""
    peak = [rss_kib(pid)[0]]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_kib(pid)[0])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], rss_kib(pid)[0])


@dataclass
class Flood:
    name: str
    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    before_kib: int = 0
    peak_kib: int = 0
    settled_kib: int = 0
    seconds: float = 0.0
    note: str = ""


async def post(
    client: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    sent = {"Content-Type": "application/json", "Accept": MCP_ACCEPT, **headers}
    try:
        async with client.post(url, data=body, headers=sent) as response:
            return response.status, dict(response.headers), await response.read()
    except aiohttp.ClientError:
        # No answer at all: the gateway cut the exchange.
        return 0, {}, b""


async def run_flood(
    flood: Flood,
    pid: int,
    count: int,
    concurrency: int,
    one: Callable[[aiohttp.ClientSession, int], Awaitable[int]],
) -> None:
    flood.requests = count
    flood.before_kib = rss_kib(pid)[0]
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    started = time.monotonic()
    with sampled_peak(pid) as peak:
        async with aiohttp.ClientSession(timeout=timeout) as client:

            async def limited(number: int) -> None:
                async with gate:
                    flood.statuses[await one(client, number)] += 1

            await asyncio.gather(*(limited(n) for n in range(count)))
    flood.seconds = time.monotonic() - started
    flood.peak_kib = peak[0]
    await asyncio.sleep(SETTLE_SECONDS)
    flood.settled_kib = rss_kib(pid)[0]


async def session_flood(
    gateway: Gateway, pid: int, count: int, subjects: int, concurrency: int
) -> Flood:
    flood = Flood("sessions", note=f"{subjects} subject(s)")
    tokens = [gateway.bearer(f"flooder-{n}") for n in range(subjects)]
    body = orjson.dumps(initialize_message("flood"))

    async def one(client: aiohttp.ClientSession, number: int) -> int:
        status, _, _ = await post(client, f"{gateway.url}/mcp", body, tokens[number % subjects])
        return status

    await run_flood(flood, pid, count, concurrency, one)
    return flood


async def batch_flood(gateway: Gateway, pid: int, batches: int, settings: Settings) -> Flood:
    flood = Flood("batches", note=f"{batches} x {settings.max_batch} tools/list, 1 x 22310")
    # Only 2025-03-26 takes batches.
    session = open_session(
        f"{gateway.url}/mcp", gateway.bearer("batcher"), "batcher", version="2025-03-26"
    )
    headers = session.headers

    def batch(size: int) -> bytes:
        return orjson.dumps(
            [{"jsonrpc": "2.0", "id": n, "method": "tools/list"} for n in range(size)]
        )

    allowed, huge = batch(settings.max_batch), batch(22_310)

    async def one(client: aiohttp.ClientSession, number: int) -> int:
        body = huge if number == batches else allowed
        status, _, _ = await post(client, f"{gateway.url}/mcp", body, headers)
        return status

    await run_flood(flood, pid, batches + 1, 4, one)
    return flood


async def big_initialize_flood(gateway: Gateway, pid: int, count: int, concurrency: int) -> Flood:
    flood = Flood("big inits", note="900 KB clientInfo each")
    auth = gateway.bearer("big-client")
    message = initialize_message("x")
    message["params"]["clientInfo"] = {"name": "x" * 900_000, "version": "1"}
    body = orjson.dumps(message)

    async def one(client: aiohttp.ClientSession, number: int) -> int:
        status, _, _ = await post(client, f"{gateway.url}/mcp", body, auth)
        return status

    await run_flood(flood, pid, count, concurrency, one)
    return flood


async def response_flood(gateway: Gateway, pid: int, count: int, megabytes: int) -> Flood:
    flood = Flood("responses", note=f"upstream answers {megabytes} MB each")
    auth = gateway.bearer("caller")
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "flood__flood", "arguments": {"mb": megabytes}},
    }
    body = orjson.dumps(message)

    async def one(client: aiohttp.ClientSession, number: int) -> int:
        status, _, raw = await post(client, f"{gateway.url}/rpc", body, auth)
        answer = orjson.loads(raw) if raw.startswith(b"{") and len(raw) < 1_000_000 else {}
        # A 200 carrying an error result counts apart: the limit answered, not the upstream.
        result = answer.get("result") if isinstance(answer, dict) else None
        return (
            299 if status == 200 and isinstance(result, dict) and result.get("isError") else status
        )

    await run_flood(flood, pid, count, 2, one)
    return flood


def register_flood_upstream(gateway: Gateway, base_url: str) -> None:
    body = {"name": "flood", "url": f"{base_url}/huge/mcp", "transport": "streamable-http"}
    add_upstream(gateway, body)


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def print_table(floods: list[Flood], limits: dict[str, str]) -> None:
    print("limits in force: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    print("(status 0: no HTTP answer; 299: HTTP 200 with an error result naming the limit)\n")
    head = "{:<10} {:>8} {:>8} {:>11} {:>10} {:>12}  {}"
    print(
        head.format(
            "flood", "requests", "seconds", "before MiB", "peak MiB", "settled MiB", "answers"
        )
    )
    for f in floods:
        answers = ", ".join(f"{status}: {n}" for status, n in sorted(f.statuses.items()))
        print(
            head.format(
                f.name,
                f.requests,
                f"{f.seconds:.1f}",
                mib(f.before_kib),
                mib(f.peak_kib),
                mib(f.settled_kib),
                f"{answers}  ({f.note})",
            )
        )


def limits_in_force() -> dict[str, str]:
    defaults = Settings()
    shown = {}
    for name in LIMITS:
        value = getattr(defaults, name.lower(), None)
        shown[name] = "not a setting here" if value is None else str(value)
    return shown


async def measure(options: argparse.Namespace, gateway: Gateway, pid: int) -> list[Flood]:
    settings = Settings()
    floods = [
        await session_flood(gateway, pid, options.sessions, options.subjects, options.concurrency),
        await batch_flood(gateway, pid, options.batches, settings),
        await big_initialize_flood(gateway, pid, options.big_inits, options.concurrency),
        await response_flood(gateway, pid, options.floods, options.flood_mb),
    ]
    return floods


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    try:
        misbehaving = start_upstream(MISBEHAVING)
    except UpstreamStartError as exc:
        raise BenchError(str(exc)) from None
    # The sessions must all fit in the worker's memory cache, or the run measures evictions.
    settings = {"MEMORY_CACHE_MAX_ITEMS": str(4 * options.sessions + 10_000)}
    try:
        with (
            running_upstream() as upstream,
            running_gateway(workdir, 1, "memory", settings) as gateway,
        ):
            register(gateway, upstream)
            register_flood_upstream(gateway, misbehaving.base_url)
            wait_until_callable(gateway, gateway.bearer("bench"), timeout=30)
            pids = gateway.worker_pids()
            if len(pids) != 1:
                raise BenchError(f"expected one gunicorn worker, found {pids or 'none'}")
            print(f"gateway:  {gateway.url} (gunicorn, 1 worker, pid {pids[0]}, memory cache)\n")
            floods = asyncio.run(measure(options, gateway, pids[0]))
            print_table(floods, limits_in_force())
    finally:
        stop_upstream(misbehaving)
    return True


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000, help="initialize requests (5000)")
    parser.add_argument(
        "--subjects", type=int, default=1, help="tokens the sessions are spread over (1)"
    )
    parser.add_argument(
        "--batches", type=int, default=200, help="batches of MAX_BATCH tools/list (200)"
    )
    parser.add_argument(
        "--big-inits", type=int, default=200, help="initialize with 900 KB clientInfo (200)"
    )
    parser.add_argument("--floods", type=int, default=4, help="calls answered in bulk (4)")
    parser.add_argument("--flood-mb", type=int, default=512, help="megabytes per answer (512)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests at a time (50)")
    options = parser.parse_args(argv)
    for name in ("sessions", "subjects", "batches", "big_inits", "floods", "concurrency"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark(
        "bench_floods", lambda workdir: benchmark(options, workdir), needs_hey=False
    )


if __name__ == "__main__":
    sys.exit(main())
