"""Contention across OS processes: each spawned process opens its own instance of a shared
cache through `cache_factory`, waits for the others, then runs its share of the work.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import queue
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from gateway.contracts import Cache
from gateway.testing.cache_conformance.fixtures import CacheOpener
from gateway.testing.cache_conformance.support import LONG_TTL, concurrent_adds

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

PROCESSES = 4
INCRS_PER_PROCESS = 25
ADDS_PER_PROCESS = 5
PROCESS_DEADLINE = 60.0
"""Seconds the spawned processes get to start, meet and report."""

Job = Callable[[Cache, str, int], Awaitable[list[Any]]]
"""Work one process does: (its own instance, the key, how many calls) -> results."""


async def incr_job(cache: Cache, key: str, count: int) -> list[Any]:
    """The values this process's increments returned."""
    return list(await asyncio.gather(*(cache.incr(key, LONG_TTL) for _ in range(count))))


async def add_job(cache: Cache, key: str, count: int) -> list[Any]:
    """The values this process managed to add."""
    return await concurrent_adds(cache, key, [f"{os.getpid()}-{n}".encode() for n in range(count)])


async def _run_job(
    job: Job, factory: CacheOpener, key: str, count: int, barrier: Barrier
) -> list[Any]:
    async with factory() as cache:
        # Every process connects first and then they start together, so they contend.
        await asyncio.to_thread(barrier.wait, PROCESS_DEADLINE)
        return await job(cache, key, count)


def _process_main(
    job: Job,
    factory: CacheOpener,
    key: str,
    count: int,
    barrier: Barrier,
    results: Queue[tuple[str, Any]],
) -> None:
    try:
        results.put(("ok", asyncio.run(_run_job(job, factory, key, count, barrier))))
    except BaseException:
        results.put(("error", traceback.format_exc()))


async def in_processes(job: Job, factory: CacheOpener, key: str, count: int) -> list[Any]:
    """Run `job` in `PROCESSES` spawned processes, each with its own instance; all results."""
    try:
        pickle.dumps(factory)
    except Exception as exc:
        pytest.fail(
            "cache_factory must be picklable (a module-level function or a "
            f"functools.partial of one) to reach other processes: {exc!r}"
        )
    # Starting, waiting for and joining processes blocks; the test's loop stays free.
    return await asyncio.to_thread(_spawn_and_collect, job, factory, key, count)


def _spawn_and_collect(job: Job, factory: CacheOpener, key: str, count: int) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results: Queue[tuple[str, Any]] = context.Queue()
    processes = [
        context.Process(
            target=_process_main,
            args=(job, factory, key, count, barrier, results),
            name=f"cache-conformance-{n}",
        )
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=PROCESS_DEADLINE) for _ in processes]
    except queue.Empty:
        pytest.fail(f"the {PROCESSES} processes did not report within {PROCESS_DEADLINE:g} s")
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()
    failures = [str(detail) for status, detail in outcomes if status == "error"]
    if failures:
        pytest.fail(f"{len(failures)} of {PROCESSES} processes failed; the first:\n{failures[0]}")
    return [item for _, detail in outcomes for item in detail]
