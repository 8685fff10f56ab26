"""What `/proc` says about processes: whether one still runs, which run a command, and the
figures of its status (memory)."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return "zombie" not in state and "dead" not in state


def processes_running(argument: str) -> list[int]:
    """The running processes with `argument` among their arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def status_kib(pid: int, field: str) -> int:
    """A size in `/proc/<pid>/status`, in KiB: `VmRSS` (resident now), `VmHWM` (its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")
