"""npm packages the tests run or read, installed once into the pytest cache.

Each set of packages gets a folder of its own (`npm-<name>` in the cache) and is installed
again only when a file it should provide is missing or the package list changed. Installs
from concurrent pytest runs sharing the cache take turns on a lock file. Without node and
npm, or when the install fails, `unavailable()` skips the test (fails it under CI=true)
naming the reason.

Also a pytest plugin (loaded by the top-level conftest): `npm_servers` is the official npm
MCP servers the stdio and interop tests run, installed once per run.

    folder = npm_install(request.config, "oidc-provider", ["oidc-provider@9"],
                         provides=["node_modules/oidc-provider/package.json"])
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import unavailable

NPM_SERVERS = (
    "@modelcontextprotocol/server-everything",
    "@modelcontextprotocol/server-filesystem",
)
"""The official MCP servers from npm that the tests run."""
NPM_SERVER_COMMANDS = ("mcp-server-everything", "mcp-server-filesystem")
INSTALL_TIMEOUT = 300.0
"""Seconds one `npm install` may take; a cold cache on a loaded machine is slow."""
MARKER = ".installed"
"""The file in the folder naming the packages the last good install put there."""


def npm_install(
    config: pytest.Config, name: str, packages: Sequence[str], provides: Sequence[str]
) -> Path:
    """The cache folder `npm-<name>` holding `packages`; `provides` are paths under it that
    a good install leaves."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable("node and npm", "not on PATH")
    folder = Path(str(config.cache.mkdir(f"npm-{name}")))
    wanted = "\n".join(packages)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(folder, wanted, provides):
            _run_install(str(npm), folder, packages)
            missing = [path for path in provides if not (folder / path).exists()]
            if missing:
                what = f"npm install of {' '.join(packages)}"
                unavailable(what, f"it left no {', '.join(missing)}")
            (folder / MARKER).write_text(wanted)
    return folder


@pytest.fixture(scope="session")
def npm_servers(request: pytest.FixtureRequest) -> Path:
    """The official npm servers, installed once into the pytest cache; their `.bin`."""
    provides = [f"node_modules/.bin/{name}" for name in NPM_SERVER_COMMANDS]
    folder = npm_install(request.config, "mcp-servers", NPM_SERVERS, provides)
    return folder / "node_modules" / ".bin"


def _installed(folder: Path, wanted: str, provides: Sequence[str]) -> bool:
    marker = folder / MARKER
    return (
        marker.exists()
        and marker.read_text() == wanted
        and all((folder / path).exists() for path in provides)
    )


def _run_install(npm: str, folder: Path, packages: Sequence[str]) -> None:
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), *packages]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        unavailable(f"npm install of {' '.join(packages)}", f"not done in {INSTALL_TIMEOUT:g}s")
        return
    if done.returncode != 0:
        why = done.stderr.strip()[-500:] or f"exit status {done.returncode}"
        unavailable(f"npm install of {' '.join(packages)}", why)
