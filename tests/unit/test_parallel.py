"""The worker pool of ingest and validate: when it is used, job order, and errors across processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from transforms.errors import ConfigError, FileRejected, GateFailed, LakeError, ReputationError, RunLocked
from transforms.parallel import map_largest_first, pool_size, worker_pool


def test_pool_size_stays_in_process_for_small_or_single_jobs() -> None:
    assert pool_size(4, [10, 10, 10], min_work=100) == 1  # too little work
    assert pool_size(4, [1_000, 0, 0], min_work=100) == 1  # one job with any work
    assert pool_size(1, [1_000, 1_000], min_work=100) == 1  # one worker configured
    assert pool_size(4, [1_000, 1_000, 5], min_work=100) == 3  # no more workers than jobs
    assert pool_size(2, [1_000, 1_000, 5], min_work=100) == 2


@pytest.mark.parametrize("exc", [
    FileRejected("landing/reviews/dt=2026-01-01/a.csv", "bad_header", "no review_id", hint="re-deliver it"),
    GateFailed("quarantine_share", "too many bad rows"),
    ConfigError("bad policy", hint="fix it"),
    RunLocked("locked"),
    LakeError("disk full"),
])
def test_project_errors_survive_pickling_with_their_fields(exc: ReputationError) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert back.__dict__ == exc.__dict__
    assert back.exit_code == exc.exit_code


def _square(x: int) -> int:
    return x * x


def _fail(x: int) -> int:
    raise FileRejected(f"file{x}.csv", "corrupt_gzip", "truncated", hint="re-deliver it")


def test_results_come_back_by_name_in_job_order_in_process_and_in_a_pool() -> None:
    jobs = {"a": (1, (2,)), "b": (9, (3,)), "c": (5, (4,))}
    assert map_largest_first(None, _square, jobs) == {"a": 4, "b": 9, "c": 16}
    with worker_pool(2) as pool:
        assert pool is not None
        out = map_largest_first(pool, _square, jobs)
    assert list(out) == ["a", "b", "c"]
    assert out == {"a": 4, "b": 9, "c": 16}


def test_an_error_in_a_worker_reaches_the_parent_whole_and_deterministically() -> None:
    with worker_pool(2) as pool, pytest.raises(FileRejected) as info:
        map_largest_first(pool, _fail, {"a": (1, (1,)), "b": (2, (2,))})
    assert info.value.path == "file1.csv"  # the first failed job in the given order, not the first to fail
    assert info.value.rule == "corrupt_gzip"
    assert info.value.hint == "re-deliver it"
    assert info.value.exit_code == 3


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """A killed run (task timeout, kill -9) must not leave workers staging on, orphaned."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from transforms.parallel import worker_pool
        if __name__ == "__main__":
            with worker_pool(2) as pool:
                futures = [pool.submit(time.sleep, 120) for _ in range(2)]
                time.sleep(1.5)  # let both workers start
                print(" ".join(str(p) for p in pool._processes), flush=True)
                time.sleep(120)
    """), encoding="utf-8")
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        assert all(_alive(p) for p in workers)
        proc.kill()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has exited


def test_pool_size_stays_in_process_when_one_job_is_nearly_all_the_work() -> None:
    # A pool would end at most 10 % sooner: the largest job alone sets the time.
    alone = {"min_work": 100, "largest_alone": 0.9}
    assert pool_size(2, [5_000_000, 2_000, 2_000, 150, 2_000], **alone) == 1
    assert pool_size(2, [900, 100], **alone) == 1
    assert pool_size(2, [890, 110], **alone) == 2
    assert pool_size(2, [900, 100], min_work=100) == 2  # not asked for (the score stage's pool)
