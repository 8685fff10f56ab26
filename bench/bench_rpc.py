"""Requests/s of tools/call through the gateway's /rpc, as a share of the upstream's direct.

Run by hand from a checkout with the gateway installed:

    python bench/bench_rpc.py [--requests N] [--concurrency C] [--workers W]

One run starts our test MCP server (a single aiohttp process) and the gateway under gunicorn
with JWT auth, SQLite and the database cache, all on loopback. It registers the upstream,
checks one `echo` call each way, warms both up, then runs `hey` against the upstream's /mcp
(on an established MCP session) and the gateway's /rpc, interleaved for two rounds so that
drift on a shared machine hits both targets alike. It prints one row per run, the median per
target, and the ratio of the gateway's requests/s to the direct upstream's.

The exit status is 0 when every request of every run answered 200 and reached the upstream,
1 when a run fell short, 2 when the set-up failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
from common import (
    GATEWAY_TOOL,
    TOOL,
    Run,
    Target,
    check_echo,
    hey,
    open_session,
    print_completeness,
    print_runs,
    register,
    run_benchmark,
    running_gateway,
    running_upstream,
    tools_call,
    upstream_calls,
    wait_until_callable,
)

ROUNDS = 2


def report(runs: list[Run], requests: int) -> bool:
    """Print the table and the ratio; True when every request succeeded and arrived."""
    medians = print_runs(runs, ("direct", "gateway"))
    ratio = medians["gateway"] / medians["direct"]
    verdict = "met" if ratio >= 0.25 else "NOT met"
    goal = "met" if ratio >= 0.50 else "not yet"
    print(
        f"\ngateway/direct requests/s: {ratio:.3f} ({ratio:.1%}); "
        f"issue target >= 25%: {verdict}; project goal >= 50%: {goal}"
    )
    return print_completeness(runs, requests)


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    with running_upstream() as upstream, running_gateway(workdir, options.workers) as gateway:
        register(gateway, upstream)
        user = gateway.bearer("bench")
        wait_until_callable(gateway, user, timeout=30)
        session = open_session(upstream.url, client="bench-rpc")
        direct_payload = workdir / "direct.json"
        gateway_payload = workdir / "gateway.json"
        direct_payload.write_bytes(orjson.dumps(tools_call(TOOL, "hello")))
        gateway_payload.write_bytes(orjson.dumps(tools_call(GATEWAY_TOOL, "hello")))
        direct = Target("direct", upstream.url, session.headers, direct_payload)
        through = Target("gateway", f"{gateway.url}/rpc", user, gateway_payload)

        pids = " ".join(map(str, gateway.worker_pids())) or "unknown"
        print(
            f"upstream: {upstream.url} (our test MCP server: a single process, pid "
            f"{upstream.process.pid}; the comparison is relative)"
        )
        print(f"gateway:  {through.url} (gunicorn, {options.workers} workers, pids {pids})")
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, "
            f"tools/call {TOOL}, {ROUNDS} interleaved rounds"
        )
        check_echo(direct, TOOL)
        check_echo(through, GATEWAY_TOOL)
        print("sample check: echo returns its text, directly and through the gateway")

        warmup = max(options.concurrency, options.requests // 10)
        for target in (direct, through):
            hey(target, warmup, options.concurrency)
        print(f"warm-up:  {warmup} requests each\n")

        runs: list[Run] = []
        for round_number in range(1, ROUNDS + 1):
            for target in (direct, through):
                before = upstream_calls(upstream)
                result = hey(target, options.requests, options.concurrency)
                calls = upstream_calls(upstream) - before
                runs.append(Run(target.name, str(round_number), result, calls))
        return report(runs, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per run (default 10000)")
    parser.add_argument("--concurrency", type=int, default=200, help="hey -c (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    options = parser.parse_args(argv)
    if options.concurrency < 1 or options.workers < 1:
        parser.error("--concurrency and --workers must be at least 1")
    if options.requests < options.concurrency:
        parser.error("--requests must be at least --concurrency (hey refuses fewer)")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_rpc", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
