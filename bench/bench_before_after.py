"""The gateway at an earlier commit against the working tree, in one run: requests/s, p99 and
CPU per tools/call, each as a share of the upstream called directly.

Run by hand from a checkout with the gateway installed (editable):

    python bench/bench_before_after.py --baseline REV [--path rpc|mcp] [--requests N]
                                       [--concurrency C] [--rounds R] [--workers W]

One run checks REV out into a temporary git worktree outside the repository, then starts on
loopback: our test MCP server (one aiohttp process); the gateway at REV; and the gateway of
the working tree. Each gateway runs as operators run it, `gunicorn -c` its own
`gunicorn.conf.py`, with the same settings (W workers, JWT auth, the database cache, its own
SQLite in a temporary directory). The same `tools/call` of `echo` goes to all three with
`hey -n N -c C`, interleaved round by round: direct, baseline, current. Through the gateways
it goes to `POST /rpc` with a bearer token, or with `--path mcp` to `POST /mcp` on an
established MCP session.

The installed project is the working tree (an editable install), so the baseline's gunicorn
gets the worktree's `src` (and the example plugin's) first on PYTHONPATH. Entry points come
from the installed metadata, so those whose module does not exist at REV are blocked for the
baseline with PLUGINS_BLOCKED; the run prints which.

Around each run it reads the CPU time of the gateway's workers and of the upstream from
/proc, and the upstream's tools/call counter. A run is complete when every request answered
200 with a body of the size of a correct echo (checked in full on samples before and after)
and the upstream answered every call. The worktree goes afterwards, even on Ctrl-C.

The exit status is 0 when every run was complete, 1 when a run fell short, 2 when the set-up
failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import (
    GATEWAY_TOOL,
    ONE_SESSION_UNBOUNDED,
    PROTOCOL_VERSION,
    REPO,
    TOOL,
    BenchError,
    Gateway,
    Measured,
    Target,
    compare_echo,
    comparison_options,
    comparison_parser,
    completeness,
    gateways_loop,
    open_session,
    print_table,
    run_benchmark,
    running_gateway,
    running_upstream,
    serve_echo,
)

# Importable because common (imported first) puts the repository on the path.
from tests.upstreams.processes import RunningUpstream

TEXT = "hello"
TARGETS = ("direct", "baseline", "current")
ENTRY_POINT_GROUP = "aio_mcp_gateway"
# Where the project's importable code lives in a checkout: the gateway and its built-in
# plugins, and the example plugin package, both installed editable from the working tree.
SOURCE_ROOTS = ("src", "plugins/gateway-time/src")


# --- the baseline checkout -----------------------------------------------------------------


def git(*args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed.stdout.strip()


@contextmanager
def checked_out(revision: str, path: Path) -> Iterator[Path]:
    """`revision` in a detached worktree at `path`, removed again on the way out."""
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    git("worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        # --force: the runs leave bytecode caches in the tree.
        try:
            git("worktree", "remove", "--force", str(path))
        except BenchError:
            shutil.rmtree(path, ignore_errors=True)
            git("worktree", "prune")


def describe_commit(revision: str) -> str:
    return git("log", "-1", "--format=%h %ad %s", "--date=short", revision)[:110]


def uncommitted(paths: tuple[str, ...]) -> int:
    """How many files under `paths` differ from HEAD: the current gateway runs them too."""
    return len(git("status", "--porcelain", "--", *paths).splitlines())


def module_found(module: str, roots: list[Path]) -> bool:
    relative = Path(*module.split("."))
    return any(
        (root / relative).with_suffix(".py").is_file()
        or (root / relative / "__init__.py").is_file()
        for root in roots
    )


def missing_entry_points(roots: list[Path]) -> list[str]:
    """The installed entry points whose module the checkout at `roots` does not have."""
    points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(point.name for point in points if not module_found(point.module, roots))


def imported_from(gateway: Gateway) -> str:
    """Where the gateway's gunicorn imports `gateway` from, asked with its own environment."""
    completed = subprocess.run(
        [sys.executable, "-c", "import gateway; print(gateway.__file__)"],
        cwd=gateway.workdir,
        env=gateway.environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or completed.stderr.strip()[-300:]


# --- targets -------------------------------------------------------------------------------


def gateway_target(name: str, gateway: Gateway, path: str, payload: Path) -> Target:
    user = gateway.bearer("bench")
    if path == "rpc":
        return Target(name, f"{gateway.url}/rpc", user, payload)
    session = open_session(f"{gateway.url}/mcp", user, client="bench-before-after")
    if session.protocol_version != PROTOCOL_VERSION:
        raise BenchError(
            f"the {name} gateway negotiated {session.protocol_version}, not {PROTOCOL_VERSION}"
        )
    return Target(name, f"{gateway.url}/mcp", session.headers, payload)


# --- the report ----------------------------------------------------------------------------


def report(runs: list[Measured], sizes: dict[str, int], requests: int) -> bool:
    """Print the table, the ratios and the verdict; True when every run was complete."""
    medians = print_table(runs, TARGETS)
    direct, baseline, current = (medians[t] for t in TARGETS)
    rps = {t: [m.result.requests_per_second for m in runs if m.target == t] for t in TARGETS}
    per_round = " ".join(
        f"{c / b:.3f}" for b, c in zip(rps["baseline"], rps["current"], strict=True)
    )
    before, after = baseline.rps / direct.rps, current.rps / direct.rps
    cpu_ratio = current.proxy_cpu_ms / baseline.proxy_cpu_ms
    print()
    print(f"baseline/direct requests/s: {before:.3f}")
    print(f"current/direct requests/s:  {after:.3f}")
    print(f"current/baseline requests/s: {current.rps / baseline.rps:.3f} (per round {per_round})")
    print(f"current/baseline p99:        {current.p99 / baseline.p99:.3f}")
    print(
        f"CPU per call (median, workers summed): baseline {baseline.proxy_cpu_ms:.3f} ms, "
        f"current {current.proxy_cpu_ms:.3f} ms (current/baseline {cpu_ratio:.2f})"
    )
    print(
        "no slower than before: "
        f"by the ratio to direct {'yes' if after >= before else 'NO'}, "
        f"by CPU per call {'yes' if cpu_ratio <= 1 else 'NO'}"
    )
    return completeness(runs, sizes, requests)


# --- the run -------------------------------------------------------------------------------


def benchmark(options: argparse.Namespace, workdir: Path) -> bool:
    with checked_out(options.baseline, workdir / "baseline-tree") as tree:
        roots = [tree / root for root in SOURCE_ROOTS]
        blocked = missing_entry_points(roots)
        settings = {"PLUGINS_BLOCKED": ",".join(blocked)} if blocked else {}
        both = dict(ONE_SESSION_UNBOUNDED) if options.path == "mcp" else {}
        settings.update(both)
        for name in ("baseline", "current"):
            (workdir / name).mkdir()
        with (
            running_upstream() as upstream,
            running_gateway(
                workdir / "baseline",
                options.workers,
                settings=settings,
                checkout=tree,
                pythonpath=tuple(roots),
            ) as baseline,
            running_gateway(workdir / "current", options.workers, settings=both) as current,
        ):
            print(f"baseline: {describe_commit(options.baseline)}")
            print(f"          imports {imported_from(baseline)}")
            print(f"          entry points blocked, absent there: {', '.join(blocked) or 'none'}")
            dirty = uncommitted((*SOURCE_ROOTS, "gunicorn.conf.py"))
            print(f"current:  {describe_commit('HEAD')}, plus {dirty} uncommitted file(s)")
            print(f"          imports {imported_from(current)}")
            return measure(options, workdir, upstream, baseline, current)


def measure(
    options: argparse.Namespace,
    workdir: Path,
    upstream: RunningUpstream,
    baseline: Gateway,
    current: Gateway,
) -> bool:
    gateways = {"baseline": baseline, "current": current}
    for gateway in gateways.values():
        serve_echo(gateway, upstream)
    loop = gateways_loop(gateways, options.workers)

    def describe(targets: tuple[Target, ...], workers: dict[str, list[int]]) -> None:
        print(f"upstream: our test MCP server, one process (pid {upstream.process.pid})")
        for target in targets[1:]:
            pids = " ".join(map(str, workers[target.name]))
            print(f"{target.name + ':':<9} {target.url} ({options.workers} workers, pids {pids})")
        print(
            f"load:     hey -n {options.requests} -c {options.concurrency} -m POST, tools/call "
            f"{TOOL} ({GATEWAY_TOOL} through the gateways' /{options.path}, JWT, loop {loop}), "
            f"{options.rounds} interleaved rounds"
        )

    runs, sizes = compare_echo(
        options,
        workdir,
        upstream,
        gateways,
        TEXT,
        "bench-before-after",
        lambda name, payloads: gateway_target(name, gateways[name], options.path, payloads.gateway),
        describe,
    )
    return report(runs, sizes, options.requests)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = comparison_parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument(
        "--path", choices=("rpc", "mcp"), default="rpc", help="the gateways' endpoint (rpc)"
    )
    return comparison_options(parser, argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    return run_benchmark("bench_before_after", lambda workdir: benchmark(options, workdir))


if __name__ == "__main__":
    sys.exit(main())
