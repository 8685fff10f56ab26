"""Python's garbage collector, set for a server that keeps what it built at start for its
whole life.

A worker holds about 100,000 objects that live as long as it does: modules, plugins, the
catalogue, compiled schemas. Each full collection walks them all, and with Python's
defaults one came every few thousand requests and cost a pause of tens of milliseconds
(far more on a busy machine). Once start-up is done they are moved out of the collector's
sight (`gc.freeze`), so a collection walks only what requests made since.

The young-generation threshold counts container objects allocated and not yet freed. A
single request briefly holds a few hundred (its request, its JSON, its tasks), nearly all
freed by reference counting when it ends; at Python's 700, a collection ran every few
requests and found almost nothing. `GC_THRESHOLD` (10,000 by default) lets collections
come for garbage, not for traffic; 0 keeps Python's own threshold.
"""

from __future__ import annotations

import gc

from aiohttp import web

from gateway.settings import Settings


def settle(threshold: int) -> None:
    """Collect what start-up left behind, then freeze every object alive now out of later
    collections, and set the young-generation threshold (0: leave it)."""
    gc.collect()
    gc.freeze()
    if threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)


def state() -> dict[str, int]:
    """What `/version` shows of this process's collector: its young-generation threshold
    and how many objects are frozen out of collections."""
    return {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}


def install(app: web.Application, settings: Settings) -> None:
    """Settle the heap once the app has started: after every resource of `cleanup_ctx`
    (the catalogue included) is built. Only for a serving process (gunicorn or `serve`):
    a process that builds many apps, such as a test run, would freeze each one's garbage."""

    async def settle_after_start(app: web.Application) -> None:
        settle(settings.gc_threshold)

    app.on_startup.append(settle_after_start)
