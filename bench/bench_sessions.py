"""How many idle MCP sessions and open SSE streams one gateway worker holds, and what each
costs in memory.

Run by hand from a checkout with the gateway installed:

    python bench/bench_sessions.py [--sessions N] [--streams K] [--concurrency C]
                                   [--cache memory|database]

One run starts our test MCP server and the gateway under gunicorn with ONE worker, JWT auth,
SQLite and the memory cache (one worker needs nothing shared, and the sessions then live in
the worker, where its RSS shows them; `--cache database` leaves only what a worker keeps of
a session it does not store). From one aiohttp client it opens N Streamable HTTP sessions at
/mcp (`initialize`, then `notifications/initialized`), then a GET event stream on K of them,
reading the worker's RSS from /proc before and after each step. While every stream is open
it checks that the worker still serves a `tools/call` on a fresh session and that idle
sessions are still known, then disables the tool through the admin API, counts the streams
that receive `notifications/tools/list_changed`, and pings the worker meanwhile to see how
long the fan-out keeps it from other clients.

The exit status is 0 when every session and stream opened and every check passed, 1 when
something fell short, 2 when the set-up failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import random
import resource
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from common import (
    GATEWAY_TOOL,
    INITIALIZED,
    MCP_ACCEPT,
    PROTOCOL_VERSION,
    BenchError,
    Gateway,
    echo_problem,
    http,
    initialize_message,
    number_option,
    run_benchmark,
    running_gateway,
    running_upstream,
    serve_echo,
    tools_call,
)

LIST_CHANGED = b"notifications/tools/list_changed"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)
# A stream is open for as long as the run lasts: only connecting is bounded.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=60)
SETTLE_SECONDS = 1.0
"""Pause before reading RSS, so that work queued by the last requests has finished."""
SPARE_FILES = 128
"""Descriptors a process needs besides the streams' sockets (logs, SQLite, listeners...)."""
SAMPLE = 100
"""Idle sessions checked with a ping while every stream is open."""
PROBE_INTERVAL = 0.02
"""Seconds between pings while the worker notifies every stream."""
PING_LEAD = 0.5
"""Seconds of pings before the notification, to show the worker's latency at rest."""
MAX_PROBES = 10_000

T = TypeVar("T")


# --- the worker, seen from /proc -----------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@dataclass(frozen=True)
class Sample:
    rss_kib: int
    files: int


async def sample(pid: int) -> Sample:
    await asyncio.sleep(SETTLE_SECONDS)
    return Sample(rss_kib(pid), open_files(pid))


def raise_open_files(wanted: int) -> tuple[int, int]:
    """Raise this process's soft limit towards `wanted`, up to the hard limit, before the
    servers start so that they inherit it; return (soft, hard) as they now are."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- the client ----------------------------------------------------------------------------


@dataclass
class Client:
    """The one aiohttp session every request of the run goes through."""

    http: aiohttp.ClientSession
    url: str
    auth: Mapping[str, str]

    def headers(self, session_id: str) -> dict[str, str]:
        return {
            **self.auth,
            "Accept": MCP_ACCEPT,
            "Mcp-Session-Id": session_id,
            "MCP-Protocol-Version": PROTOCOL_VERSION,
        }

    async def post(self, body: Any, headers: Mapping[str, str]) -> tuple[int, str | None, bytes]:
        """POST a message; (status, Mcp-Session-Id, body).

        A pooled connection the server has just closed for idleness fails at once; one
        retry on a new connection is what any client does.
        """
        try:
            return await self._post_once(body, headers)
        except aiohttp.ServerDisconnectedError:
            return await self._post_once(body, headers)

    async def _post_once(
        self, body: Any, headers: Mapping[str, str]
    ) -> tuple[int, str | None, bytes]:
        async with self.http.post(
            self.url, data=orjson.dumps(body), headers=headers, timeout=REQUEST_TIMEOUT
        ) as reply:
            return reply.status, reply.headers.get("Mcp-Session-Id"), await reply.read()

    async def initialize(self) -> str:
        """A new, initialised session; its id."""
        headers = {**self.auth, "Accept": MCP_ACCEPT, "Content-Type": "application/json"}
        status, session_id, body = await self.post(initialize_message("bench-sessions"), headers)
        if status != 200 or not session_id:
            raise BenchError(f"initialize: HTTP {status} {body[:200]!r}")
        version = orjson.loads(body).get("result", {}).get("protocolVersion")
        if version != PROTOCOL_VERSION:
            raise BenchError(f"initialize negotiated {version}, not {PROTOCOL_VERSION}")
        status, _, body = await self.post(INITIALIZED, self._json(session_id))
        if status != 202:
            raise BenchError(f"notifications/initialized: HTTP {status} {body[:200]!r}")
        return session_id

    async def call(self, session_id: str, message: dict[str, Any]) -> tuple[int, Any]:
        status, _, body = await self.post(message, self._json(session_id))
        try:
            return status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return status, body[:200]

    def _json(self, session_id: str) -> dict[str, str]:
        return {**self.headers(session_id), "Content-Type": "application/json"}


@dataclass
class Stream:
    """A session's open GET event stream, read until the run ends."""

    response: aiohttp.ClientResponse
    notified_at: float | None = None
    notified: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    reader: asyncio.Task[None] | None = field(default=None, repr=False)

    async def read(self) -> None:
        # Reading keeps the server's writes flowing; a stream nobody reads would stall its
        # sender once the socket buffers fill.
        try:
            async for line in self.response.content:
                if self.notified_at is None and line.startswith(b"data:") and LIST_CHANGED in line:
                    self.notified_at = time.monotonic()
                    self.notified.set()
        except aiohttp.ClientError:
            pass
        self.ended = True

    def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        self.response.close()


async def open_stream(client: Client, session_id: str) -> Stream:
    headers = {**client.headers(session_id), "Accept": "text/event-stream"}
    response = await client.http.get(client.url, headers=headers, timeout=STREAM_TIMEOUT)
    kind = response.headers.get("Content-Type", "")
    if response.status != 200 or not kind.startswith("text/event-stream"):
        body = await response.read()
        response.close()
        raise BenchError(f"GET stream: HTTP {response.status} {kind} {body[:200]!r}")
    stream = Stream(response)
    stream.reader = asyncio.create_task(stream.read())
    return stream


async def pooled(
    count: int, concurrency: int, step: Callable[[int], Awaitable[T]]
) -> tuple[list[T], list[str]]:
    """Run `step(0..count-1)` with at most `concurrency` at a time; (results, failures)."""
    results: list[T] = []
    failures: list[str] = []
    indexes = iter(range(count))

    async def worker() -> None:
        # The workers share one iterator, so together they take each index exactly once.
        for index in indexes:
            try:
                results.append(await step(index))
            except (aiohttp.ClientError, TimeoutError, BenchError, OSError) as exc:
                failures.append(str(exc) or type(exc).__name__)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return results, failures


# --- the measurement -----------------------------------------------------------------------


@dataclass
class Table:
    rows: list[tuple[str, str]] = field(default_factory=list)
    ok: bool = True

    def add(self, name: str, value: str, ok: bool = True) -> None:
        self.rows.append((name, value if ok else f"{value}  <-- FAILED"))
        self.ok = self.ok and ok

    def print(self) -> None:
        width = max(len(name) for name, _ in self.rows)
        print(f"{'measure':<{width}}  value")
        for name, value in self.rows:
            print(f"{name:<{width}}  {value}")


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def per_item(before: Sample, after: Sample, count: int) -> str:
    if count == 0:
        return "n/a"
    return f"{(after.rss_kib - before.rss_kib) / count:.2f} KiB"


def rate(count: int, seconds: float) -> str:
    return f"{count} in {seconds:.1f} s ({count / seconds:.0f}/s)" if seconds else str(count)


def failed(failures: list[str]) -> str:
    return f", {len(failures)} failed (first: {failures[0]})" if failures else ""


async def measure(options: argparse.Namespace, gateway: Gateway, pid: int, table: Table) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        client = Client(http, f"{gateway.url}/mcp", gateway.bearer("bench"))
        # Warm-up: the code paths run once and the pool's connections exist before the
        # baseline, so the baseline holds everything except the sessions themselves.
        await pooled(options.concurrency, options.concurrency, lambda _: client.initialize())
        baseline = await sample(pid)

        started = time.monotonic()
        sessions, failures = await pooled(
            options.sessions, options.concurrency, lambda _: client.initialize()
        )
        took = time.monotonic() - started
        idle = await sample(pid)
        table.add(
            "idle sessions opened", rate(len(sessions), took) + failed(failures), not failures
        )
        if not sessions:
            raise BenchError(f"no session opened{failed(failures)}")
        table.add("worker RSS before sessions", mib(baseline.rss_kib))
        table.add("worker RSS with idle sessions", mib(idle.rss_kib))
        table.add("memory per idle session", per_item(baseline, idle, len(sessions)))

        streams: list[Stream] = []
        try:
            started = time.monotonic()
            wanted = sessions[: options.streams]
            streams, failures = await pooled(
                len(wanted), options.concurrency, lambda i: open_stream(client, wanted[i])
            )
            took = time.monotonic() - started
            held = await sample(pid)
            table.add(
                "open SSE streams (GET /mcp)",
                rate(len(streams), took) + failed(failures),
                not failures and len(streams) == options.streams,
            )
            table.add("worker RSS with streams", mib(held.rss_kib))
            table.add("memory per open stream", per_item(idle, held, len(streams)))
            table.add(
                "worker open files (base/idle/streams)",
                f"{baseline.files} / {idle.files} / {held.files}",
            )
            await check_while_streaming(client, sessions, table)
            # Any session will do for pinging; the newest is the least likely to be evicted.
            await notify(options, client, gateway, streams, sessions[-1], table)
        finally:
            for stream in streams:
                stream.close()
            readers = [s.reader for s in streams if s.reader is not None]
            await asyncio.gather(*readers, return_exceptions=True)


async def check_while_streaming(client: Client, sessions: list[str], table: Table) -> None:
    """The worker still does its job with every stream open: a new session's call works, and
    old sessions (the first ones opened included) are still known."""
    started = time.monotonic()
    try:
        fresh = await client.initialize()
        status, answer = await client.call(fresh, tools_call(GATEWAY_TOOL, "still here"))
        problem = f"HTTP {status}" if status != 200 else echo_problem(answer, "still here")
    except BenchError as exc:
        problem = str(exc)
    took = (time.monotonic() - started) * 1000
    table.add(
        "fresh session: initialize + tools/call",
        f"echo ok in {took:.0f} ms" if problem is None else str(problem),
        problem is None,
    )

    picked = sessions[: SAMPLE // 2] + random.sample(sessions, min(SAMPLE // 2, len(sessions)))
    known = 0
    for index, session_id in enumerate(picked):
        ping = {"jsonrpc": "2.0", "id": index, "method": "ping"}
        status, answer = await client.call(session_id, ping)
        known += status == 200 and isinstance(answer, dict) and answer.get("result") == {}
    table.add(
        "idle sessions still known (ping)",
        f"{known} of {len(picked)} (oldest and random)",
        known == len(picked),
    )


def ping_loop(
    url: str, headers: dict[str, str], ready: EventType, stop: EventType, out: Connection
) -> None:
    """In a process of its own: ping every PROBE_INTERVAL until `stop`; send the latencies.

    The fan-out to every stream runs on the worker's one event loop, so a ping's latency
    shows how long other clients wait meanwhile. This process is not the one reading the
    10000 streams, whose own event loop would otherwise delay the answers it measures.
    """
    latencies: list[float] = []
    for index in range(MAX_PROBES):
        if stop.wait(PROBE_INTERVAL):
            break
        started = time.monotonic()
        try:
            http("POST", url, {"jsonrpc": "2.0", "id": index, "method": "ping"}, headers)
        except BenchError:
            continue
        latencies.append(time.monotonic() - started)
        ready.set()
    out.send(latencies)


@contextlib.contextmanager
def pinging(client: Client, session_id: str) -> Iterator[Callable[[], list[float]]]:
    """Ping the worker from another process while the block runs; call the value yielded
    to stop and get the latencies in seconds."""
    # spawn, not fork: a forked child would inherit every stream's socket.
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    receiver, sender = context.Pipe(duplex=False)
    headers = {**client.headers(session_id), "Content-Type": "application/json"}
    pinger = context.Process(target=ping_loop, args=(client.url, headers, ready, stop, sender))
    pinger.start()
    sender.close()
    # A new interpreter takes a moment to start; measure nothing before it pings.
    if not ready.wait(30):
        raise BenchError("the pinging process did not get an answer within 30 s")

    def finish() -> list[float]:
        stop.set()
        latencies: list[float] = receiver.recv() if receiver.poll(30) else []
        return latencies

    try:
        yield finish
    finally:
        stop.set()
        pinger.join(10)
        if pinger.is_alive():
            pinger.kill()
            pinger.join()
        receiver.close()


async def notify(
    options: argparse.Namespace,
    client: Client,
    gateway: Gateway,
    streams: list[Stream],
    pinged: str,
    table: Table,
) -> None:
    """Disable the tool through the admin API and count the streams told about it, pinging
    the worker meanwhile."""
    with pinging(client, pinged) as finish:
        # A few pings before the PATCH show the worker's latency when it is not notifying.
        await asyncio.sleep(PING_LEAD)
        status, patched, arrived = await _notify(options, client, gateway, streams)
        latencies = finish()
    table.add(
        "PATCH /tools/<tool> enabled=false",
        f"HTTP {status} in {patched:.2f} s",
        status == 200,
    )
    last = f", the last {max(arrived):.2f} s after the PATCH began" if arrived else ""
    table.add(
        "streams told tools/list_changed",
        f"{len(arrived)} of {len(streams)}{last}",
        len(arrived) == len(streams),
    )
    if latencies:
        table.add(
            "ping latency meanwhile (max / median)",
            f"{max(latencies) * 1000:.0f} ms / {statistics.median(latencies) * 1000:.0f} ms, "
            f"{len(latencies)} pings from another process",
        )
    still_open = sum(not s.ended for s in streams)
    table.add(
        "streams still open at the end",
        f"{still_open} of {len(streams)}",
        still_open == len(streams),
    )


async def _notify(
    options: argparse.Namespace, client: Client, gateway: Gateway, streams: list[Stream]
) -> tuple[int, float, list[float]]:
    """PATCH, then wait for the streams: (status, seconds the PATCH took, each arrival)."""
    admin = gateway.bearer("bench-admin", "admin")
    started = time.monotonic()
    async with client.http.patch(
        f"{gateway.url}/tools/{GATEWAY_TOOL}",
        json={"enabled": False},
        headers=admin,
        timeout=REQUEST_TIMEOUT,
    ) as reply:
        status = reply.status
        await reply.read()
    patched = time.monotonic() - started
    # Bounded: a stream that never hears is counted, not waited for.
    remaining = options.wait - (time.monotonic() - started)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(remaining, 0.1)):
            await asyncio.gather(*(s.notified.wait() for s in streams))
    arrived = [s.notified_at - started for s in streams if s.notified_at is not None]
    return status, patched, arrived


async def interruptible(work: Coroutine[Any, Any, None]) -> None:
    """Run `work`, cancelling it on SIGINT or SIGTERM so that every stream closes in order.

    A KeyboardInterrupt raised by a plain signal handler would land in whichever task runs
    at that moment; cancelling this one unwinds through its cleanup instead. The handlers
    in place before are restored, so the servers' teardown can still be interrupted.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in signals}
    for signum in signals:
        loop.add_signal_handler(signum, task.cancel)
    try:
        await work
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    table = Table()
    needed = options.streams + options.concurrency + SPARE_FILES
    soft, hard = raise_open_files(needed)
    if soft < needed:
        fitting = max(0, soft - options.concurrency - SPARE_FILES)
        print(
            f"note: the open-files hard limit is {hard}, too low for {options.streams} streams "
            f"(each needs a descriptor in this client and in the worker); opening {fitting}"
        )
        options.streams = fitting
    # Sessions, and the event log's entries for every stream, all live in the worker's LRU
    # memory cache; a default-sized one would evict the oldest sessions and measure
    # evictions instead.
    max_items = options.max_items or 2 * (options.sessions + options.streams) + 10_000
    # One token opens every session and stream: the bounds per caller and per worker (whose
    # refusals the limit tests cover) are lifted, so what is measured is what a worker holds.
    settings = {
        "MAX_SESSIONS_PER_SUBJECT": "0",
        "MAX_STREAMS_PER_SUBJECT": "0",
        "MAX_STREAMS": "0",
    }
    if options.cache == "memory":
        settings["MEMORY_CACHE_MAX_ITEMS"] = str(max_items)
    with (
        running_upstream() as upstream,
        running_gateway(workdir, 1, options.cache, settings) as gateway,
    ):
        serve_echo(gateway, upstream)
        pids = gateway.worker_pids()
        if len(pids) != 1:
            raise BenchError(f"expected one gunicorn worker, found {pids or 'none'}")
        cache = f"CACHE_TYPE={options.cache}" + "".join(f", {k}={v}" for k, v in settings.items())
        print(f"gateway:  {gateway.url}/mcp (gunicorn, 1 worker, pid {pids[0]}, {cache})")
        print(
            f"client:   one aiohttp ClientSession, TCPConnector(limit=0), {options.concurrency} "
            f"requests at a time; open-files limit soft {soft}, hard {hard}"
        )
        print(
            f"plan:     {options.sessions} idle sessions (protocol {PROTOCOL_VERSION}), "
            f"then a GET stream on {options.streams} of them\n"
        )
        table.add("worker pid", str(pids[0]))
        try:
            asyncio.run(interruptible(measure(options, gateway, pids[0], table)))
        finally:
            table.print()
        if not table.ok and (log := gateway.log()):
            print(f"gateway log (tail):\n{log}", file=sys.stderr)
    return table.ok


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    number_option(parser, "--sessions", 10_000, "idle sessions to open")
    number_option(
        parser, "--streams", 10_000, "GET streams to open, one per session, at most --sessions"
    )
    number_option(parser, "--concurrency", 200, "requests in flight")
    number_option(parser, "--wait", 30.0, "seconds to wait for every stream's list_changed")
    parser.add_argument(
        "--cache",
        choices=("memory", "database"),
        default="memory",
        help="where the sessions live (default memory: in the worker, one worker needs no more)",
    )
    parser.add_argument(
        "--max-items",
        type=int,
        default=0,
        help="MEMORY_CACHE_MAX_ITEMS for the gateway (default: enough for the run)",
    )
    options = parser.parse_args(argv)
    if options.sessions < 1 or options.concurrency < 1 or options.streams < 1:
        parser.error("--sessions, --streams and --concurrency must be at least 1")
    if options.streams > options.sessions:
        parser.error("--streams must be at most --sessions (one stream per session)")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark(
        "bench_sessions", lambda workdir: benchmark(options, workdir), needs_hey=False
    )


if __name__ == "__main__":
    sys.exit(main())
