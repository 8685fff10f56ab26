"""The `stdio` backend: an MCP server run by the gateway as a local process, spoken to over
its stdin and stdout.

Registration (admin scope only, like every upstream)::

    {"name": "time", "transport": "stdio", "command": "mcp-server-time",
     "args": ["--local-timezone", "UTC"], "env": {"KEY": "value"}, "cwd": "/srv/x"}

Running a command is running code, so `command` must be named in `STDIO_COMMANDS` (empty by
default: no stdio upstream until the operator lists some). It is found on the gateway's
PATH, whatever `env` says. `env` values are credentials, kept encrypted like headers and
shown by name only.

The process model (`STDIO_MODE`):

- `shared` (the default): one process per upstream per instance, whatever the number of
  workers. The first worker that needs one starts the instance's stdio host
  (`stdio/host.py`), a process that runs every stdio upstream and serves all the workers
  over a Unix socket in the runtime directory (`stdio/hub.py`), multiplexing their requests
  onto each process's one MCP session. An `flock` on a file there elects it: the lock lives
  as long as the host, so one runs at a time and another starts when it dies. The host is
  no worker's part: a worker that is killed or recycled takes nothing down. It exits
  (stopping its processes) once no worker has been connected to it for a few seconds, so
  stopping the gateway, gracefully or not, leaves nothing running; and its processes get
  SIGKILL from the kernel if it dies itself (`PR_SET_PDEATHSIG`).
- `per-worker`: each worker runs its own process of each upstream (N workers, N processes),
  for servers that keep per-client state or for isolation. No host, one hop fewer.

Either way `STDIO_MAX_PROCESSES` bounds the processes per instance (per worker in
`per-worker` mode; 16 by default); a registration past it fails with a message naming it.
`stdio/process.py` has the supervision: restarts with backoff, bounded logging of stderr and
of what is not JSON-RPC on stdout, the `initialize` timeout (`STDIO_INITIALIZE_TIMEOUT`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from gateway.plugin import (
    JSON,
    Backend,
    BackendSpec,
    Registrar,
    Settings,
    SettingsError,
    SettingSpec,
    UpstreamConfig,
    choice,
    hookimpl,
    integer,
    number,
    text,
)
from gateway_plugins.stdio.channel import runtime_dir
from gateway_plugins.stdio.hub import HostCommand
from gateway_plugins.stdio.process import StdioClient
from gateway_plugins.stdio.remote import HostedStdio

MAX_ARGS = 256


def _commands(name: str, raw: str) -> tuple[str, ...]:
    commands = tuple(part.strip() for part in raw.split(",") if part.strip())
    for command in commands:
        if "\0" in command:
            raise SettingsError(f"{name}: a command must not contain NUL")
    return commands


COMMANDS: SettingSpec[tuple[str, ...]] = SettingSpec(
    "STDIO_COMMANDS",
    (),
    _commands,
    "executables stdio upstreams may run, comma-separated (empty: none may)",
)
MODE = SettingSpec(
    "STDIO_MODE",
    "shared",
    choice("shared", "per-worker"),
    "shared: one process per stdio upstream per instance; per-worker: one per worker",
)
MAX_PROCESSES = SettingSpec(
    "STDIO_MAX_PROCESSES",
    16,
    integer(minimum=1),
    "stdio processes per instance (per worker with STDIO_MODE=per-worker)",
)
RUNTIME_DIR = SettingSpec(
    "STDIO_RUNTIME_DIR",
    "",
    text,
    "the stdio host's socket and lock (default: one per user and database in the temp dir)",
)
INITIALIZE_TIMEOUT = SettingSpec(
    "STDIO_INITIALIZE_TIMEOUT",
    20.0,
    number(above=0),
    "seconds a stdio process has to answer initialize",
)


def _refusal(command: str, settings: Settings) -> str | None:
    allowed = settings.plugin_value(COMMANDS)
    if command in allowed:
        return None
    listed = ", ".join(allowed) if allowed else "it is empty, so no command may run"
    return f"'command' {command!r} is not in STDIO_COMMANDS ({listed})"


def check_options(options: Mapping[str, Any], url: str, settings: Settings) -> JSON:
    if url:
        raise ValueError("a stdio upstream takes no 'url'")
    command = options.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ValueError("'command' must name the executable to run")
    refusal = _refusal(command, settings)
    if refusal is not None:
        raise ValueError(refusal)
    if shutil.which(command) is None:
        raise ValueError(f"'command' {command!r} is not an executable on the gateway's PATH")
    args = options.get("args", [])
    if (
        not isinstance(args, list)
        or len(args) > MAX_ARGS
        or not all(isinstance(a, str) and "\0" not in a for a in args)
    ):
        raise ValueError(f"'args' must be a list of at most {MAX_ARGS} strings")
    checked: JSON = {"command": command, "args": args}
    cwd = options.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, str) or not os.path.isabs(cwd) or not os.path.isdir(cwd):
            raise ValueError("'cwd' must be the absolute path of an existing directory")
        checked["cwd"] = cwd
    return checked


def _host_command(settings: Settings) -> HostCommand:
    return HostCommand(
        max_processes=settings.plugin_value(MAX_PROCESSES),
        initialize_timeout=settings.plugin_value(INITIALIZE_TIMEOUT),
        tool_timeout=settings.tool_timeout,
    )


def stdio_backend(upstream: UpstreamConfig, settings: Settings) -> Backend:
    refusal = _refusal(str(upstream.options.get("command", "")), settings)
    if settings.plugin_value(MODE) == "per-worker":
        return StdioClient(
            upstream,
            settings,
            settings.plugin_value(INITIALIZE_TIMEOUT),
            refusal,
            settings.plugin_value(MAX_PROCESSES),
        )
    directory = partial(_directory, settings.plugin_value(RUNTIME_DIR), settings.database_url)
    return HostedStdio(upstream, settings, directory, partial(_host_command, settings), refusal)


def _directory(configured: str, instance: str) -> Path:
    return runtime_dir(configured, instance)


@hookimpl(trylast=True)
def gateway_register_settings(register: Registrar[SettingSpec[Any]]) -> None:
    for spec in (COMMANDS, MODE, MAX_PROCESSES, RUNTIME_DIR, INITIALIZE_TIMEOUT):
        register.add(spec)


@hookimpl(trylast=True)
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="stdio",
            transport="stdio",
            factory=stdio_backend,
            description="An MCP server run by the gateway as a local process (stdin/stdout).",
            fields=frozenset({"command", "args", "env", "cwd"}),
            check_options=check_options,
            needs_url=False,
            secrets_field="env",
        )
    )
