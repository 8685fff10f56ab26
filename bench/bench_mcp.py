"""Requests/s of tools/call through the gateway's /mcp, as a share of the upstream's direct.

Run by hand from a checkout with the gateway installed:

    python bench/bench_mcp.py [--requests N] [--concurrency C] [--workers W]
                              [--cache database|redis] [--redis-url URL]

Like `bench_rpc.py`, but the gateway is reached the way MCP clients reach it: Streamable
HTTP at /mcp, on one session opened with `initialize` and `notifications/initialized`
(protocol 2025-06-18), each call carrying `Mcp-Session-Id` and `MCP-Protocol-Version`. The
calls carry no progress token, so the gateway answers with plain JSON. Sessions live in the
gateway's cache, so with several workers the cache must be shared: the database cache (the
default) or Redis. After the table it prints the CPU time each call cost the gateway workers
and the upstream, read from /proc: unlike requests/s, it does not depend on what else the
machine is running.

The exit status is 0 when every request of every run answered 200 and reached the upstream,
1 when a run fell short, 2 when the set-up failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from common import (
    DEFAULT_REDIS_URL,
    GATEWAY_TOOL,
    PROTOCOL_VERSION,
    TOOL,
    BenchError,
    CpuPerCall,
    Run,
    Target,
    check_echo,
    cpu_seconds,
    forget_keys,
    hey,
    open_session,
    print_completeness,
    print_runs,
    redis_answers,
    register,
    run_benchmark,
    running_gateway,
    running_upstream,
    tools_call,
    upstream_calls,
    wait_until_callable,
)

ROUNDS = 2


@contextmanager
def cache_settings(options: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The gateway variables for the chosen cache; with Redis, this run's keys go afterwards."""
    if options.cache == "database":
        # The database cache lives in the run's temporary SQLite file.
        yield {}
        return
    if not redis_answers(options.redis_url):
        raise BenchError(f"--cache redis: nothing answers PING at {options.redis_url}")
    # A Redis may be shared with other gateways or runs; a prefix of our own keeps this run's
    # sessions and counters apart from theirs, and theirs out of our measurement.
    prefix = f"bench-{secrets.token_hex(4)}"
    try:
        yield {"REDIS_URL": options.redis_url, "CACHE_PREFIX": prefix}
    finally:
        forget_keys(options.redis_url, prefix)


def report(runs: list[Run], cpu: list[CpuPerCall], requests: int) -> bool:
    """Print the table, the ratio and the CPU per call; True when every request succeeded
    and arrived."""
    medians = print_runs(runs, ("direct", "gateway"))
    ratio = medians["gateway"] / medians["direct"]
    print(f"\ngateway/direct requests/s: {ratio:.3f} ({ratio:.1%})")
    # CPU time per call does not depend on what else the machine runs, unlike requests/s.
    mine = {t: [c for r, c in zip(runs, cpu, strict=True) if r.target == t] for t in medians}
    gateway_ms = statistics.median(c.gateway_ms for c in mine["gateway"])
    through_ms = statistics.median(c.upstream_ms for c in mine["gateway"])
    direct_ms = statistics.median(c.upstream_ms for c in mine["direct"])
    print(
        f"CPU per call (median): gateway workers {gateway_ms:.3f} ms + upstream "
        f"{through_ms:.3f} ms through /mcp; upstream {direct_ms:.3f} ms direct"
    )
    return print_completeness(runs, requests)


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    with (
        cache_settings(options) as settings,
        running_upstream() as upstream,
        running_gateway(workdir, options.workers, options.cache, settings) as gateway,
    ):
        register(gateway, upstream)
        user = gateway.bearer("bench")
        wait_until_callable(gateway, user, timeout=30)
        direct_session = open_session(upstream.url, client="bench-mcp")
        gateway_session = open_session(f"{gateway.url}/mcp", user, client="bench-mcp")
        if gateway_session.protocol_version != PROTOCOL_VERSION:
            raise BenchError(
                f"the gateway negotiated {gateway_session.protocol_version}, not {PROTOCOL_VERSION}"
            )
        direct_payload = workdir / "direct.json"
        gateway_payload = workdir / "gateway.json"
        direct_payload.write_bytes(orjson.dumps(tools_call(TOOL, "hello")))
        gateway_payload.write_bytes(orjson.dumps(tools_call(GATEWAY_TOOL, "hello")))
        direct = Target("direct", upstream.url, direct_session.headers, direct_payload)
        through = Target("gateway", f"{gateway.url}/mcp", gateway_session.headers, gateway_payload)

        pids = " ".join(map(str, gateway.worker_pids())) or "unknown"
        print(
            f"upstream: {upstream.url} (our test MCP server: a single process, pid "
            f"{upstream.process.pid}; the comparison is relative)"
        )
        print(
            f"gateway:  {through.url} (gunicorn, {options.workers} workers, pids {pids}, "
            f"CACHE_TYPE={options.cache})"
        )
        print(
            f"sessions: one each way, protocol {PROTOCOL_VERSION}; gateway session "
            f"{gateway_session.session_id[:8]}..., upstream session "
            f"{direct_session.session_id[:8]}..."
        )
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, "
            f"tools/call {TOOL} (JSON answers), {ROUNDS} interleaved rounds"
        )
        check_echo(direct, TOOL)
        check_echo(through, GATEWAY_TOOL)
        print("sample check: echo returns its text, directly and through the gateway's /mcp")

        warmup = max(options.concurrency, options.requests // 10)
        for target in (direct, through):
            hey(target, warmup, options.concurrency)
        print(f"warm-up:  {warmup} requests each\n")

        runs: list[Run] = []
        cpu: list[CpuPerCall] = []
        workers, upstream_pid = gateway.worker_pids(), [upstream.process.pid]
        for round_number in range(1, ROUNDS + 1):
            for target in (direct, through):
                before = upstream_calls(upstream)
                cpu_before = cpu_seconds(workers), cpu_seconds(upstream_pid)
                result = hey(target, options.requests, options.concurrency)
                cpu_after = cpu_seconds(workers), cpu_seconds(upstream_pid)
                calls = upstream_calls(upstream) - before
                runs.append(Run(target.name, str(round_number), result, calls))
                per_call = 1000 / options.requests
                cpu.append(
                    CpuPerCall(
                        (cpu_after[0] - cpu_before[0]) * per_call,
                        (cpu_after[1] - cpu_before[1]) * per_call,
                    )
                )
        return report(runs, cpu, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per run (default 10000)")
    parser.add_argument("--concurrency", type=int, default=200, help="hey -c (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    parser.add_argument(
        "--cache",
        choices=("database", "redis"),
        default="database",
        help="the gateway's shared cache, which holds the sessions (default database)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help=f"with --cache redis (default $REDIS_URL, else {DEFAULT_REDIS_URL})",
    )
    options = parser.parse_args(argv)
    if options.concurrency < 1 or options.workers < 1:
        parser.error("--concurrency and --workers must be at least 1")
    if options.requests < options.concurrency:
        parser.error("--requests must be at least --concurrency (hey refuses fewer)")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_mcp", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
