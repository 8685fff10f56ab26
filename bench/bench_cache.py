"""Requests/s of a cacheable tool call with the gateway's result cache on and off, per cache type.

Run by hand from a checkout with the gateway installed:

    python bench/bench_cache.py [--requests N] [--concurrency C] [--workers W] [--rounds R]
                                [--delay S] [--caches memory,sqlite,postgres,redis]
                                [--postgres-url URL] [--redis-url URL]

For each cache type (memory; database on SQLite; database on PostgreSQL, in a schema of its
own dropped afterwards; Redis, under a key prefix of its own deleted afterwards) one run
starts our test MCP server and the gateway under gunicorn (JWT on), registers the upstream
and calls its `sleep` tool through POST /rpc with the same arguments every time, so that
with the cache on every call after the first is a hit. The upstream is meant to be the slow
part (each call waits there, and it is a single process); the output says whether it was.
The tool's `cache_ttl` is switched off and on (`PATCH /tools/{name}`) for interleaved
rounds of `hey`, and with the cache on, sample calls must carry the hit marker before
anything is measured. It prints one table for all cache types: median requests/s, p99 and
CPU per call (gateway workers, upstream) per mode, and the on/off throughput ratio.

The exit status is 0 when every request answered 200, every call with the cache off reached
the upstream and none with it on did; 1 when a run fell short; 2 when the set-up failed,
a sample call with the cache on that was not a hit included; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import orjson
import psycopg2
from common import (
    POLL_INTERVAL,
    UPSTREAM_NAME,
    BenchError,
    CpuPerCall,
    Gateway,
    HeyResult,
    Reply,
    Target,
    comparison_options,
    comparison_parser,
    forget_keys,
    hey,
    http,
    number_option,
    redis_answers,
    redis_url_option,
    run_benchmark,
    running_gateway,
    running_upstream,
    serve_echo,
    wait_until,
    watched_hey,
)
from tests.upstreams.processes import RunningUpstream

from gateway.results import META_KEY
from gateway.store.postgres import describe_url

TOOL = "sleep"
GATEWAY_TOOL = f"{UPSTREAM_NAME}__{TOOL}"
CACHE_TTL = 300
"""Seconds, far longer than a run: an entry must not expire between the rounds."""
MODES = ("off", "on")
EXPECTED_RATIO = 2.0
"""The issue's expectation for a memory or Redis hit over the uncached path."""
DEFAULT_POSTGRES_URL = os.environ.get(
    "GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class CacheKind:
    name: str
    """As given to --caches."""
    label: str
    """As shown in the table."""
    cache_type: str
    """The gateway's CACHE_TYPE."""
    expectation: bool
    """Whether the issue's 2x expectation applies to it."""


KINDS = (
    CacheKind("memory", "memory", "memory", True),
    CacheKind("sqlite", "database/SQLite", "database", False),
    CacheKind("postgres", "database/PostgreSQL", "database", False),
    CacheKind("redis", "redis", "redis", True),
)


# --- the cache types' surroundings ---------------------------------------------------------


def postgres_connection(url: str) -> Any:
    try:
        connection = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.Error as exc:
        raise BenchError(f"PostgreSQL at {describe_url(url)}: {str(exc).strip()}") from None
    connection.autocommit = True
    return connection


def with_search_path(url: str, schema: str) -> str:
    """`url` with libpq's `options=-csearch_path=<schema>`, so every table of the gateway
    lands in that schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "options" for name, _ in query):
        raise BenchError("--postgres-url must not carry ?options=; the benchmark sets its own")
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A new, empty schema, dropped with everything in it on the way out."""
    schema = f"bench_{secrets.token_hex(4)}"
    with closing(postgres_connection(url)) as connection, connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        try:
            with closing(postgres_connection(url)) as connection, connection.cursor() as cursor:
                # A killed worker's backend may hold its locks a moment longer; waiting for
                # them is right, waiting forever is not.
                cursor.execute("SET lock_timeout = '10s'")
                cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except (BenchError, psycopg2.Error) as exc:
            print(f"bench_cache: could not drop schema {schema} ({exc})", file=sys.stderr)


@contextmanager
def cache_settings(kind: CacheKind, options: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The gateway variables for one cache type, and afterwards the removal of what it
    left outside the run's temporary directory."""
    if kind.name in ("memory", "sqlite"):
        # The store, and the database cache with it, is the run's temporary SQLite file.
        yield {}
        return
    # The server may be shared with other gateways or runs. Keys, and PostgreSQL's NOTIFY
    # channels (which a schema does not separate), carry CACHE_PREFIX, so a prefix of our
    # own keeps their traffic out of this measurement and ours out of theirs.
    prefix = f"bench-{secrets.token_hex(4)}"
    if kind.name == "redis":
        try:
            yield {"REDIS_URL": options.redis_url, "CACHE_PREFIX": prefix}
        finally:
            forget_keys(options.redis_url, prefix)
        return
    with postgres_schema(options.postgres_url) as schema:
        url = with_search_path(options.postgres_url, schema)
        yield {"DATABASE_URL": url, "CACHE_PREFIX": prefix}


def check_services(kinds: list[CacheKind], options: argparse.Namespace) -> None:
    """Fail before the first measurement rather than halfway through the run."""
    names = {kind.name for kind in kinds}
    if "redis" in names and not redis_answers(options.redis_url):
        raise BenchError(
            f"nothing answers PING at {options.redis_url}; pass --redis-url, or leave redis "
            "out of --caches"
        )
    if "postgres" in names:
        # Refuses a URL that sets libpq options itself, before any schema exists.
        with_search_path(options.postgres_url, "bench")
        postgres_connection(options.postgres_url).close()


# --- calls and the cache switch ------------------------------------------------------------


def sleep_call(seconds: float) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": GATEWAY_TOOL, "arguments": {"seconds": seconds}},
    }


def cache_marker(reply: Reply, seconds: float) -> str | None:
    """The result's cache marker ("hit", "miss"), or None when it has none; BenchError when
    the call did not return what the tool returns (a fast wrong answer is not a result)."""
    message = reply.json()
    result = message.get("result") if isinstance(message, dict) else None
    expected = [{"type": "text", "text": f"slept {seconds:g}s"}]
    if reply.status != 200 or not isinstance(result, dict) or result.get("content") != expected:
        raise BenchError(f"{GATEWAY_TOOL} failed: HTTP {reply.status} {reply.body[:300]!r}")
    meta = result.get("_meta")
    marker = meta.get(META_KEY) if isinstance(meta, dict) else None
    return None if marker is None else str(marker)


def call_marker(target: Target, seconds: float) -> str | None:
    body = sleep_call(seconds)
    return cache_marker(http("POST", target.url, body, target.headers), seconds)


def switch(
    gateway: Gateway, target: Target, admin: Mapping[str, str], mode: str, seconds: float
) -> None:
    """Set the tool's cache_ttl for `mode` and return once every worker applies it."""
    ttl = CACHE_TTL if mode == "on" else None
    reply = http("PATCH", f"{gateway.url}/tools/{GATEWAY_TOOL}", {"cache_ttl": ttl}, admin)
    if reply.status != 200:
        raise BenchError(f"PATCH cache_ttl={ttl} failed: HTTP {reply.status} {reply.body!r}")
    # The worker that took the PATCH applies it at once, the others within the catalogue
    # poll. Past that, a streak of calls on fresh connections (any worker may take each)
    # all in the new mode is as close as one gets to asking every worker.
    time.sleep(POLL_INTERVAL * 1.5)

    def applied() -> bool:
        want_marker = mode == "on"
        return all(
            (call_marker(target, seconds) is not None) == want_marker
            for _ in range(4 * gateway.workers)
        )

    wait_until(applied, 30, f"every worker to serve {GATEWAY_TOOL} with the cache {mode}")


def check_hits(target: Target, seconds: float, samples: int) -> None:
    """With the cache on and warm, calls must be answered from it."""
    markers = [call_marker(target, seconds) for _ in range(samples)]
    if any(marker != "hit" for marker in markers):
        raise BenchError(f"cache on and warm, yet the markers were {markers}, not all 'hit'")


# --- measuring -----------------------------------------------------------------------------


class CacheFailures:
    """The cache failures the gateway logged since the last look.

    The result cache turns a failed or late cache operation into a miss, so a cached call
    that reached the upstream is explained here; the gateway's log goes with the run's
    temporary directory, so this is the only place the reason survives.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.offset = 0

    def since_last(self) -> Counter[str]:
        with self.log_path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        # A line still being written is read next time, whole.
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        reasons: Counter[str] = Counter()
        for line in complete.splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event") == "cache operation failed":
                reasons[str(record.get("error"))] += 1
        return reasons


@dataclass(frozen=True)
class Run:
    kind: CacheKind
    mode: str
    round_number: int
    result: HeyResult
    upstream_calls: int
    cpu: CpuPerCall
    cache_failures: Counter[str]


@dataclass
class Watch:
    """What one gateway and its upstream are watched with while a run goes."""

    upstream: RunningUpstream
    workers: list[int]
    failures: CacheFailures

    def run(
        self, target: Target, options: argparse.Namespace
    ) -> tuple[HeyResult, int, CpuPerCall, Counter[str]]:
        """One hey run, with the upstream's calls, the CPU per call and the cache failures
        it caused."""
        self.failures.since_last()
        run = watched_hey(
            target, options.requests, options.concurrency, self.upstream, self.workers
        )
        return run.result, run.upstream_calls, run.cpu, self.failures.since_last()


def measure(kind: CacheKind, options: argparse.Namespace, workdir: Path) -> list[Run]:
    """Interleaved off/on rounds for one cache type, on a gateway and upstream of its own."""
    gateway_dir = workdir / kind.name
    gateway_dir.mkdir()
    seconds = options.delay
    with (
        cache_settings(kind, options) as settings,
        running_upstream() as upstream,
        running_gateway(gateway_dir, options.workers, kind.cache_type, settings) as gateway,
    ):
        user = gateway.bearer("bench")
        admin = gateway.bearer("bench-admin", "admin")
        serve_echo(gateway, upstream, user)
        payload = gateway_dir / "call.json"
        payload.write_bytes(orjson.dumps(sleep_call(seconds)))
        # One caller throughout: the caller is part of the result cache's key.
        target = Target(kind.label, f"{gateway.url}/rpc", user, payload)
        print(f"\n{kind.label}: CACHE_TYPE={kind.cache_type}, {describe(kind, settings)}")
        if kind.cache_type == "memory":
            print(
                f"  the memory cache is per worker ({options.workers} workers): the first "
                "call in each worker is a miss and goes upstream; the warm-up takes those"
            )
        watch = Watch(upstream, gateway.worker_pids(), CacheFailures(gateway.log_path))
        samples = 2 * options.workers
        runs: list[Run] = []
        for round_number in range(1, options.rounds + 1):
            for mode in MODES:
                switch(gateway, target, admin, mode, seconds)
                hey(target, warmup_requests(options), options.concurrency)
                if mode == "on":
                    check_hits(target, seconds, samples)
                runs.append(Run(kind, mode, round_number, *watch.run(target, options)))
                print(progress(runs[-1], samples))
        return runs


def rounds(options: argparse.Namespace) -> str:
    return f"{options.rounds} round{'' if options.rounds == 1 else 's'}"


def warmup_requests(options: argparse.Namespace) -> int:
    return int(max(options.concurrency, options.requests // 10))


def describe(kind: CacheKind, settings: Mapping[str, str]) -> str:
    if kind.name == "postgres":
        url = settings["DATABASE_URL"]
        schema = dict(parse_qsl(urlsplit(url).query))["options"].partition("=")[2]
        return f"store and cache in PostgreSQL {describe_url(url)}, schema {schema}"
    if kind.name == "redis":
        return f"store in SQLite, cache in Redis with CACHE_PREFIX={settings['CACHE_PREFIX']}"
    if kind.name == "sqlite":
        return "store and cache in a temporary SQLite file"
    return "store in a temporary SQLite file, cache in each worker"


def progress(run: Run, samples: int) -> str:
    r = run.result
    hits = f"; {samples}/{samples} sample calls hit" if run.mode == "on" else ""
    failed = run.cache_failures.total()
    failures = f", cache failures {failed}" if failed else ""
    return (
        f"  round {run.round_number} {run.mode:<3} {r.requests_per_second:9.1f} req/s, "
        f"p50 {r.p50_ms:7.2f} ms, p99 {r.p99_ms:7.2f} ms, non-200 {r.non_200}, "
        f"upstream calls {run.upstream_calls}{failures}, CPU per call: gateway "
        f"{run.cpu.gateway_ms:.3f} ms, upstream {run.cpu.upstream_ms:.3f} ms{hits}"
    )


# --- the report ----------------------------------------------------------------------------

_TABLE = "{:<19} {:<4} {:>8} {:>24} {:>8} {:>7} {:>7} {:>8} {:>7} {:>6}"


def report(runs: list[Run], kinds: list[CacheKind], options: argparse.Namespace) -> bool:
    """Print the table for every cache type and the verdicts; True when every run was
    complete."""
    ratios = print_table(runs, kinds)
    print(
        f"\nreq/s, p99 ms: medians over {rounds(options)} of hey -n {options.requests} "
        f"-c {options.concurrency}; gw CPU, up CPU: median CPU ms per call of the gateway "
        "workers and of the upstream (not Redis' or PostgreSQL's); upstream: tools/call it "
        "answered, all rounds; on/off: median req/s with the cache on over off"
    )
    print_premise([run for run in runs if run.mode == "off"], options)
    for kind in kinds:
        if kind.expectation:
            met = "met" if ratios[kind.name] >= EXPECTED_RATIO else "NOT met"
            print(
                f"{kind.label}: on/off {ratios[kind.name]:.2f}x; "
                f"issue expectation >= {EXPECTED_RATIO:g}x: {met}"
            )
    if any(kind.cache_type == "memory" for kind in kinds):
        print(
            f"memory: per worker ({options.workers} workers), so the first call in each "
            "worker is a miss; those misses fell in the warm-up"
        )
    return complete(runs, options.requests)


def print_table(runs: list[Run], kinds: list[CacheKind]) -> dict[str, float]:
    """One row per cache type and mode; return the on/off ratio of each cache type."""
    print()
    print(
        _TABLE.format(
            "cache",
            "mode",
            "req/s",
            "req/s per round",
            "p99 ms",
            "gw CPU",
            "up CPU",
            "upstream",
            "non-200",
            "on/off",
        )
    )
    ratios: dict[str, float] = {}
    for kind in kinds:
        medians: dict[str, float] = {}
        for mode in MODES:
            mine = [run for run in runs if run.kind == kind and run.mode == mode]
            rates = [run.result.requests_per_second for run in mine]
            medians[mode] = statistics.median(rates)
            ratio = ""
            if mode == "on":
                ratios[kind.name] = medians["on"] / medians["off"]
                ratio = f"{ratios[kind.name]:.2f}x"
            print(
                _TABLE.format(
                    kind.label,
                    mode,
                    f"{medians[mode]:.1f}",
                    " / ".join(f"{rate:.1f}" for rate in rates),
                    f"{statistics.median(run.result.p99_ms for run in mine):.2f}",
                    f"{statistics.median(run.cpu.gateway_ms for run in mine):.3f}",
                    f"{statistics.median(run.cpu.upstream_ms for run in mine):.3f}",
                    sum(run.upstream_calls for run in mine),
                    sum(run.result.non_200 for run in mine),
                    ratio,
                )
            )
    return ratios


def print_premise(uncached: list[Run], options: argparse.Namespace) -> None:
    """Say whether the upstream was the slower part, which the 2x expectation assumes.

    The upstream limits the uncached path when that path runs near the upstream's own
    ceiling: the lower of one core's worth of its CPU per call (it is one process) and
    -c / delay (every connection of hey waits out the sleep). Otherwise the gateway's
    CPU, shared with hey, is what limits it.
    """
    rate = statistics.median(run.result.requests_per_second for run in uncached)
    upstream_ms = statistics.median(run.cpu.upstream_ms for run in uncached)
    gateway_ms = statistics.median(run.cpu.gateway_ms for run in uncached)
    ceilings = [1000 / upstream_ms] if upstream_ms > 0 else []
    if options.delay > 0:
        ceilings.append(options.concurrency / options.delay)
    ceiling = min(ceilings, default=float("inf"))
    limited = "is" if rate >= 0.8 * ceiling else "is NOT"
    print(
        f"uncached path: {rate:.0f} req/s, gateway {gateway_ms:.3f} ms CPU per call, upstream "
        f"{upstream_ms:.3f} ms; the upstream's ceiling is {ceiling:.0f} req/s, so the "
        f"upstream {limited} the slower part here (medians over every cache type)"
    )


def complete(runs: list[Run], requests: int) -> bool:
    """Warn about every run that fell short: a non-200, an uncached call that did not reach
    the upstream, or a cached one that did (with the cache failures the gateway logged)."""
    short = False
    for run in runs:
        expected = requests if run.mode == "off" else 0
        if run.result.non_200 or run.upstream_calls != expected:
            short = True
            print(
                f"WARNING: {run.kind.label} {run.mode} round {run.round_number}: "
                f"{run.result.non_200} non-200, upstream answered {run.upstream_calls} "
                f"tools/call (expected {expected})"
            )
            for reason, count in run.cache_failures.most_common(3):
                print(f"  the gateway logged {count} x cache operation failed: {reason}")
    if not short:
        print(
            "every run: all HTTP 200; cache off: every call reached the upstream; "
            "cache on: none did"
        )
    return not short


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    kinds = [kind for kind in KINDS if kind.name in options.caches]
    check_services(kinds, options)
    print(
        f"upstream: our test MCP server (one process per cache type), tool {TOOL} "
        f'{{"seconds": {options.delay:g}}}, the same arguments on every call'
    )
    print(
        f"gateway:  gunicorn, {options.workers} workers, JWT, POST /rpc; cache off: no "
        f"cache_ttl; on: cache_ttl {CACHE_TTL}"
    )
    print(
        f"load:     hey -n {options.requests} -c {options.concurrency} -m POST; "
        f"{rounds(options)} of off, on per cache type, each after a warm-up of "
        f"{warmup_requests(options)} requests; "
        f"{os.cpu_count()} CPUs shared by hey, the gateway and the upstream"
    )
    if options.delay > 0:
        # Each connection of hey waits for the sleep, so the sleep alone caps the uncached
        # path at this rate; below it, CPU is what limits.
        bound = options.concurrency / options.delay
        print(f"          the sleep alone caps the uncached path at -c / delay = {bound:.0f} req/s")
    runs: list[Run] = []
    for kind in kinds:
        runs += measure(kind, options, workdir)
    return report(runs, kinds, options)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    names = [kind.name for kind in KINDS]
    parser = comparison_parser(
        __doc__.splitlines()[0],
        workers_help="gateway workers",
        requests=5000,
        rounds="off/on rounds per cache type",
    )
    number_option(parser, "--delay", 0.02, "seconds the upstream's sleep tool waits per call")
    parser.add_argument(
        "--caches",
        type=lambda raw: [name.strip() for name in raw.split(",") if name.strip()],
        default=names,
        help=f"comma-separated; they run in the order {','.join(names)} (default all)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="a database the benchmark may create a schema in (default "
        "$GATEWAY_TEST_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/test)",
    )
    redis_url_option(parser)
    options = comparison_options(parser, argv)
    unknown = sorted(set(options.caches) - set(names))
    if unknown or not options.caches:
        parser.error(f"--caches takes some of {', '.join(names)}; got {', '.join(unknown)}")
    if options.delay < 0:
        parser.error("--delay must not be negative")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_cache", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
