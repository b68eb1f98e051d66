"""Run independent per-source steps in worker processes.

Staging and validating the five sources are independent of each other (apart from the
registry, validated first), and most of their time is single-threaded Python: the
HMAC of every identifier, the Great Expectations suite on pandas, the CSV record walk.
One process therefore uses about one of the machine's cores; a pool of processes uses
the rest. Outputs do not depend on the pool: each source writes only its own partitions
and its report comes back to the parent, which assembles them in the fixed source order.

Small runs stay in one process: a worker pays 2-6 s of imports (Polars, Great
Expectations), more than a small source takes to stage.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: Default of ``REPUTATION_PARALLEL_MIN_BYTES``: below this many bytes of landing files to
#: stage, ingest stays in one process.
MIN_PARALLEL_BYTES = 50_000_000
#: Default of ``REPUTATION_PARALLEL_MIN_ROWS``: below this many typed rows to validate, validate
#: stays in one process (a worker first spends 3-6 s importing Great Expectations; the suite
#: checks about a million rows in that time).
MIN_PARALLEL_ROWS = 2_000_000


#: A unit holding at least this share of the work runs the whole job in one process (see
#: :func:`pool_size`): a pool would finish at most 10 % sooner. Used by ingest and validate.
LARGEST_UNIT_ALONE = 0.9


def pool_size(workers: int | None, sizes: Iterable[int], *, min_work: int,
              largest_alone: float | None = None) -> int:
    """How many worker processes to use for units of these sizes (1 = stay in this process).

    Parameters
    ----------
    workers
        The configured number (``REPUTATION_WORKERS``); ``None`` means one per CPU core.
    sizes
        The work of each unit (a source's bytes or rows).
    min_work
        Total work below which a pool costs more than it saves (:data:`MIN_PARALLEL_BYTES`,
        :data:`MIN_PARALLEL_ROWS`).
    largest_alone
        When the largest unit holds at least this share of the work, stay in this process
        (:data:`LARGEST_UNIT_ALONE`). For jobs whose units are all there is to run: the
        score stage's pool also runs the shards, which its units do not count.
    """
    units = [s for s in sizes if s > 0]
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1 or len(units) <= 1 or sum(units) < min_work:
        return 1
    # The work ends no sooner than its largest unit. When that unit is nearly all of it, more
    # processes save almost nothing and each holds its own imports (0.3-0.4 GB with Great
    # Expectations): a delivery day of 5 M reviews beside a few thousand rows of each other
    # source (issue 3.10) ran in a pool of two, one worker idle.
    if largest_alone is not None and max(units) >= largest_alone * sum(units):
        return 1
    return min(workers, len(units))


def release_memory() -> None:
    """Give freed heap pages back to the operating system (glibc's ``malloc_trim``; no-op elsewhere).

    pandas and Great Expectations free a batch's copies when it is done, but glibc keeps the
    pages, so a process's resident size ratchets up batch after batch (measured: 180 MB of a
    3.3 GB validate peak at M). Two workers side by side add up their high-water marks.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _init_worker(log_level: int, log_format: str, parent: int) -> None:
    from transforms.logs import configure

    configure(log_format, logging.getLevelName(log_level))
    # A killed parent (an Airflow task timing out, Ctrl-C on the CLI) cannot shut the pool down;
    # without this the workers would stage on, orphaned, into an attempt nobody will publish.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


@contextmanager
def worker_pool(size: int, log_format: str = "text") -> Iterator[ProcessPoolExecutor | None]:
    """A process pool of ``size`` workers (``None`` when ``size`` is 1: run in this process).

    Workers are spawned, not forked: Polars' thread pool and Great Expectations' state in
    the parent must not be copied into a child mid-flight.
    """
    if size <= 1:
        yield None
        return
    level = logging.getLogger("reputation").getEffectiveLevel()
    with ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(level, log_format, os.getpid())) as pool:
        yield pool


def call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``: lets one :func:`map_largest_first` run jobs of different functions."""
    return fn(*args)


def map_largest_first(pool: ProcessPoolExecutor | None, fn: Callable[..., T],
                      jobs: dict[str, tuple[int, tuple[Any, ...]]]) -> dict[str, T]:
    """Run ``fn(*args)`` for every job, the largest first; results by job name.

    Without a pool the jobs run here, in the given order. With one, the largest jobs
    start first so the last to finish is a small one. An exception of any job is
    raised here once every started job has ended (no half-written source is left
    running behind the error).
    """
    if pool is None:
        return {name: fn(*args) for name, (_, args) in jobs.items()}
    order = sorted(jobs, key=lambda n: -jobs[n][0])
    futures: dict[str, Future[T]] = {n: pool.submit(fn, *jobs[n][1]) for n in order}
    error: BaseException | None = None
    results: dict[str, T] = {}
    for name in jobs:
        try:
            results[name] = futures[name].result()
        except BaseException as exc:  # re-raised below, once the other jobs have ended
            error = error or exc
    if error is not None:
        raise error
    return results
