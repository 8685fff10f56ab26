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
import secrets
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import (
    ONE_SESSION_UNBOUNDED,
    PROTOCOL_VERSION,
    TOOL,
    BenchError,
    CpuPerCall,
    Run,
    Target,
    comparison_options,
    comparison_parser,
    direct_against_gateway,
    echo_pair,
    forget_keys,
    open_session,
    print_completeness,
    print_runs,
    redis_answers,
    redis_url_option,
    run_benchmark,
)

ROUNDS = 2


@contextmanager
def cache_settings(options: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The gateway variables for the chosen cache; with Redis, this run's keys go afterwards."""
    if options.cache == "database":
        # The database cache lives in the run's temporary SQLite file.
        yield dict(ONE_SESSION_UNBOUNDED)
        return
    if not redis_answers(options.redis_url):
        raise BenchError(f"--cache redis: nothing answers PING at {options.redis_url}")
    # A Redis may be shared with other gateways or runs; a prefix of our own keeps this run's
    # sessions and counters apart from theirs, and theirs out of our measurement.
    prefix = f"bench-{secrets.token_hex(4)}"
    try:
        yield {"REDIS_URL": options.redis_url, "CACHE_PREFIX": prefix, **ONE_SESSION_UNBOUNDED}
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
        echo_pair(workdir, options.workers, "bench-mcp", options.cache, settings) as pair,
    ):
        gateway, direct = pair.gateway, pair.direct
        gateway_session = open_session(f"{gateway.url}/mcp", pair.user, client="bench-mcp")
        if gateway_session.protocol_version != PROTOCOL_VERSION:
            raise BenchError(
                f"the gateway negotiated {gateway_session.protocol_version}, not {PROTOCOL_VERSION}"
            )
        through = Target(
            "gateway", f"{gateway.url}/mcp", gateway_session.headers, pair.payloads.gateway
        )
        print(
            f"gateway:  {through.url} (gunicorn, {options.workers} workers, "
            f"pids {pair.gateway_pids}, CACHE_TYPE={options.cache})"
        )
        print(
            f"sessions: one each way, protocol {PROTOCOL_VERSION}; gateway session "
            f"{gateway_session.session_id[:8]}..., upstream session "
            f"{direct.headers['Mcp-Session-Id'][:8]}..."
        )
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, "
            f"tools/call {TOOL} (JSON answers), {ROUNDS} interleaved rounds"
        )
        where = "the gateway's /mcp"
        workers = gateway.worker_pids()
        runs, cpu = direct_against_gateway(
            direct, through, pair.upstream, options, ROUNDS, where, workers
        )
        return report(runs, cpu, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = comparison_parser(__doc__.splitlines()[0], workers_help="gateway workers", rounds=None)
    parser.add_argument(
        "--cache",
        choices=("database", "redis"),
        default="database",
        help="the gateway's shared cache, which holds the sessions (default database)",
    )
    redis_url_option(parser, "with --cache redis ")
    return comparison_options(parser, argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_mcp", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
