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

from common import (
    TOOL,
    Run,
    Target,
    comparison_options,
    comparison_parser,
    direct_against_gateway,
    echo_pair,
    print_completeness,
    print_runs,
    run_benchmark,
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
    with echo_pair(workdir, options.workers, "bench-rpc") as pair:
        through = Target("gateway", f"{pair.gateway.url}/rpc", pair.user, pair.payloads.gateway)
        print(
            f"gateway:  {through.url} (gunicorn, {options.workers} workers, "
            f"pids {pair.gateway_pids})"
        )
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, "
            f"tools/call {TOOL}, {ROUNDS} interleaved rounds"
        )
        runs, _ = direct_against_gateway(
            pair.direct, through, pair.upstream, options, ROUNDS, "the gateway"
        )
        return report(runs, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = comparison_parser(__doc__.splitlines()[0], workers_help="gateway workers", rounds=None)
    return comparison_options(parser, argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_rpc", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
