"""The directory of prometheus_client's multiprocess files, run by the gunicorn master, so
`/metrics` on any worker counts for the whole server with no setting.

`prepare()` runs before anything imports prometheus_client (which reads
`PROMETHEUS_MULTIPROC_DIR` at import): without that variable it makes a private directory
(mode 0700), empty by construction, and names it to the workers; an operator's own
directory is used as it is and left alone. When a worker exits, `retire(pid)` drops its
gauges and folds its counters and histograms into one archive file per type, so its counts
stay in the totals while the directory holds a bounded number of files however often
workers are recycled. `remove()` deletes the gateway's own directory at exit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
OWNED = "GATEWAY_METRICS_DIR_OWNED"
"""Names the directory when the gateway made it (so a configuration reload reuses it)."""
ARCHIVED_TYPES = ("counter", "histogram", "summary")
ARCHIVE = "archive"
"""Where a dead worker's file name has its pid: `counter_archive.db`."""


class MetricsDirError(Exception):
    """The multiprocess directory is missing or cannot be made: one line saying which."""


def prepare() -> str:
    """The directory the workers count in, made now unless the environment names one."""
    given = os.environ.get(VARIABLE)
    if given:
        if not os.path.isdir(given):
            raise MetricsDirError(f"{VARIABLE}={given} is not a directory")
        return given
    try:
        made = tempfile.mkdtemp(prefix="aio-mcp-gateway-metrics-")
    except OSError as exc:
        raise MetricsDirError(
            f"cannot make the metrics directory under {tempfile.gettempdir()} "
            f"({exc.strerror or exc}); set TMPDIR or {VARIABLE} to a writable directory"
        ) from None
    os.environ[VARIABLE] = os.environ[OWNED] = made
    return made


def retire(pid: int) -> None:
    """Drop a dead worker's gauges and fold its counts into the archive files."""
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    path = os.environ.get(VARIABLE)
    if not path:
        return
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    for kind in ARCHIVED_TYPES:
        dead = Path(path, f"{kind}_{pid}.db")
        if not dead.exists():
            continue
        archive = MmapedDict(str(Path(path, f"{kind}_{ARCHIVE}.db")))  # type: ignore[no-untyped-call]
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(dead)):  # type: ignore[no-untyped-call]
                kept, _ = archive.read_value(key)  # type: ignore[no-untyped-call]
                archive.write_value(key, kept + value, timestamp)  # type: ignore[no-untyped-call]
        finally:
            archive.close()  # type: ignore[no-untyped-call]
        dead.unlink()


def remove() -> None:
    """Delete the directory if the gateway made it."""
    owned = os.environ.get(OWNED)
    if owned and owned == os.environ.get(VARIABLE):
        shutil.rmtree(owned, ignore_errors=True)
