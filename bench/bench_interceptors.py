"""What interceptors cost on the hot path, in one run: the gateway with no interceptor, the
same gateway with the guardrails `pii` interceptor, and (with `--baseline REV`) the gateway
at a commit from before interceptors existed, each as a share of the upstream called directly.

Run by hand from a checkout with the gateway and `plugins/gateway-guardrails` installed
(editable):

    python bench/bench_interceptors.py [--baseline REV] [--path rpc|mcp] [--requests N]
                                       [--concurrency C] [--rounds R] [--workers W]

It starts on loopback our test MCP server and two gateways of the working tree under
gunicorn (W workers each, JWT auth, the database cache), one with `INTERCEPTORS` empty and
one with `INTERCEPTORS=pii`, plus the baseline's if asked (checked out into a temporary git
worktree, as `bench_before_after.py` does). The same `tools/call` of `echo` with a sentence
of about 300 characters and no personal data (so every answer is the same echo, and `pii`
scans all of it, both ways) goes to each with `hey -n N -c C`, interleaved round by round.
CPU per call is read from /proc around each run. A run is complete when every request
answered 200 with a body the size of a correct echo and the upstream answered every call.

The exit status is 0 when every run was complete, 1 when a run fell short, 2 when the set-up
failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from bench_before_after import (
    SOURCE_ROOTS,
    checked_out,
    describe_commit,
    gateway_target,
    missing_entry_points,
)
from common import (
    TOOL,
    Gateway,
    Measured,
    Target,
    compare_echo,
    comparison_options,
    comparison_parser,
    completeness,
    gateways_loop,
    print_table,
    run_benchmark,
    running_gateway,
    running_upstream,
    serve_echo,
)

# Importable because common (imported first) puts the repository on the path.
from tests.upstreams.processes import RunningUpstream

TEXT = (
    "The quarterly report covers revenue, churn and the roadmap for the next two releases; "
    "the team reviewed open incidents, agreed on the migration plan for the storage layer, "
    "and asked for a summary of customer feedback before the planning meeting on Thursday."
)


def report(
    runs: list[Measured],
    targets: tuple[str, ...],
    sizes: dict[str, int],
    requests: int,
) -> bool:
    medians = print_table(runs, targets)
    direct, none, pii = medians["direct"], medians["none"], medians["pii"]
    print()
    for name in targets[1:]:
        print(f"{name}/direct requests/s: {medians[name].rps / direct.rps:.3f}")
    print(f"pii/none requests/s:    {pii.rps / none.rps:.3f}")
    print(f"pii/none p99:           {pii.p99 / none.p99:.3f}")
    print(
        f"CPU per call (median, workers summed): none {none.proxy_cpu_ms:.3f} ms, "
        f"pii {pii.proxy_cpu_ms:.3f} ms (+{pii.proxy_cpu_ms - none.proxy_cpu_ms:.3f} ms)"
    )
    if "baseline" in medians:
        base = medians["baseline"]
        print(
            f"no interceptor against the baseline: CPU per call {none.proxy_cpu_ms:.3f} ms "
            f"against {base.proxy_cpu_ms:.3f} ms (none/baseline "
            f"{none.proxy_cpu_ms / base.proxy_cpu_ms:.2f}), requests/s none/baseline "
            f"{none.rps / base.rps:.3f}"
        )
    return completeness(runs, sizes, requests)


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    with ExitStack() as stack:
        upstream = stack.enter_context(running_upstream())
        gateways: dict[str, Gateway] = {}
        if options.baseline:
            tree = stack.enter_context(checked_out(options.baseline, workdir / "baseline-tree"))
            roots = [tree / root for root in SOURCE_ROOTS]
            blocked = missing_entry_points(roots)
            (workdir / "baseline").mkdir()
            gateways["baseline"] = stack.enter_context(
                running_gateway(
                    workdir / "baseline",
                    options.workers,
                    settings={"PLUGINS_BLOCKED": ",".join(blocked)} if blocked else {},
                    checkout=tree,
                    pythonpath=tuple(roots),
                )
            )
            print(f"baseline: {describe_commit(options.baseline)}")
            print(f"          entry points blocked, absent there: {', '.join(blocked) or 'none'}")
        for name, chain in (("none", ""), ("pii", "pii")):
            (workdir / name).mkdir()
            gateways[name] = stack.enter_context(
                running_gateway(workdir / name, options.workers, settings={"INTERCEPTORS": chain})
            )
        print(
            f"current:  {describe_commit('HEAD')} (none: INTERCEPTORS empty; pii: INTERCEPTORS=pii)"
        )
        return measure(options, workdir, upstream, gateways)


def measure(
    options: argparse.Namespace,
    workdir: Path,
    upstream: RunningUpstream,
    gateways: dict[str, Gateway],
) -> bool:
    for gateway in gateways.values():
        serve_echo(gateway, upstream)
    loop = gateways_loop(gateways, options.workers)

    def describe(targets: tuple[Target, ...], workers: dict[str, list[int]]) -> None:
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, tools/call "
            f"{TOOL} of {len(TEXT)} characters through /{options.path}, JWT, loop "
            f"{loop}, {options.rounds} interleaved rounds"
        )

    runs, sizes = compare_echo(
        options,
        workdir,
        upstream,
        gateways,
        TEXT,
        "bench-interceptors",
        lambda name, payloads: gateway_target(name, gateways[name], options.path, payloads.gateway),
        describe,
    )
    return report(runs, ("direct", *gateways), sizes, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = comparison_parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="also run the gateway at this commit")
    parser.add_argument("--path", choices=("rpc", "mcp"), default="rpc")
    return comparison_options(parser, argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_interceptors", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
