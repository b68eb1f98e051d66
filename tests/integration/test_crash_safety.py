"""Crash safety and concurrency of publishing.

What a reader may see of a date at any moment is the previous run's outputs or the
new run's outputs, whole: the manifest, the scores, the enforcement state and the
actions of one run, every Parquet file readable. These tests kill runs (SIGKILL at
random moments, and a simulated crash before every single file-system step of the
commit), start two runs of one date at once, rerun a date, and break a backfill in
the middle.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.landing import START, small_marketplace, write_rows
from transforms.lake import Lake
from transforms.pipeline import run_date
from transforms.settings import Settings

pytestmark = pytest.mark.slow

DATE_TABLES = ("scores", "state/enforcement", "actions", "held_actions")


# ----------------------------------------------------------------------------- helpers
def _cli(*args: str, root: Path, timeout: float = 240, extra_env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "REPUTATION_ROOT": str(root), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "transforms", *args, "--root", str(root)], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def _popen(*args: str, root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "transforms", *args, "--root", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _digest_tree(path: Path) -> dict[str, str]:
    """Content hash of every file reachable under ``path`` (following the partition links)."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for dirpath, _, files in os.walk(path, followlinks=True):
        for f in files:
            full = Path(dirpath) / f
            out[str(full.relative_to(path))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


def _snapshot(root: Path, day: date) -> dict[str, dict[str, str]]:
    """Every published output of one score date, byte for byte."""
    tables = [*DATE_TABLES, "runs"]
    return {t: _digest_tree(root / t / f"score_date={day}") for t in tables}


def _run_id_of(folder: Path) -> set[str]:
    ids = set()
    for f in folder.glob("*.parquet"):
        pq.read_table(f)  # every visible file reads whole
        ids.add(pq.read_schema(f).metadata[b"run_id"].decode())
    return ids


def _visible_run(root: Path, day: date, *, scans: bool = True) -> str | None:
    """The run a reader sees for ``day``, after asserting it is whole; ``None`` when the date is absent."""
    # A table folder holds partitions and nothing else: a stray entry (even a hidden one) breaks
    # DuckDB's and Polars' Hive scans of the whole table, as does a dangling link.
    folders = [(root / t, "score_date=") for t in DATE_TABLES]
    folders += [(q, "dt=") for q in (root / "quarantine").glob("*")]
    for folder, prefix in folders:
        for entry in folder.iterdir() if folder.exists() else ():
            assert entry.name.startswith(prefix), f"stray entry {entry}"
            assert entry.is_dir(), f"dangling partition {entry}"
    manifest = root / "runs" / f"score_date={day}" / "manifest.json"
    if not manifest.exists():
        for t in DATE_TABLES:
            assert not list((root / t / f"score_date={day}").glob("*")), f"{t} of {day} is visible without a manifest"
        return None
    m = json.loads(manifest.read_text())
    run_id = m["run_id"]
    if m["status"] == "failed":
        for t in DATE_TABLES:
            assert not list((root / t / f"score_date={day}").glob("*")), f"{t} of {day} is visible beside a failure"
        return run_id
    assert _run_id_of(root / "scores" / f"score_date={day}") == {run_id}
    assert _run_id_of(root / "state" / "enforcement" / f"score_date={day}") == {run_id}
    feed, other = ("held_actions", "actions") if m["status"] == "held" else ("actions", "held_actions")
    assert _run_id_of(root / feed / f"score_date={day}") == {run_id}
    assert not list((root / other / f"score_date={day}").glob("*.parquet")), f"{other} of {day} is still visible"
    assert (root / "runs" / f"score_date={day}" / "report.html").exists()
    for table in ("scores", "actions") if scans else ():
        if (root / table).exists():
            pl.scan_parquet(root / table, hive_partitioning=True).collect()
            duckdb.sql(f"SELECT count(*) FROM read_parquet('{root / table}/*/*.parquet', hive_partitioning = true)"
                       ).fetchall()
    for f in (root / "quarantine").glob("*/*/*.parquet"):
        pq.read_table(f)
    return run_id


def _published_run_ids(root: Path) -> dict[date, str | None]:
    return {d: _visible_run(root, d) for d in Lake(root).partitions("runs", "score_date")}


def _more_reviews(root: Path, day: date, name: str = "late") -> None:
    """A second delivery for ``day``: the next run of the date has new inputs (a new run_id)."""
    write_rows(root, "reviews", day, [
        {"review_id": f"{name}-{i}", "merchant_id": f"M{i % 3}", "order_id": None, "reviewer_id": f"x{i}",
         "rating": 1, "text": "bad", "created_at": f"{day}T02:00:00Z", "verified_purchase": True}
        for i in range(3)], fmt="jsonl", name=name)


class _Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, no ``finally`` cleans up the lake."""


#: Steps that change what a path shows (making an empty folder does not).
_MUTATIONS = ("replace", "rename", "symlink", "unlink", "rmdir")


@contextlib.contextmanager
def _crash_before_step(k: int) -> Iterator[list[str]]:
    """Raise :class:`_Crash` just before the ``k``-th file-system mutation (1-based).

    Removing a whole folder counts as one step: what is removed must already be out of
    sight, which the check after the next step would catch.
    """
    done: list[str] = []
    originals = {name: getattr(os, name) for name in _MUTATIONS}
    rmtree = shutil.rmtree
    inside_rmtree = []

    def step(what: str) -> None:
        if inside_rmtree:
            return
        if len(done) + 1 == k:
            raise _Crash(f"crash before {what}")
        done.append(what)

    def wrap(name: str) -> Any:
        def mutation(*args: Any, **kwargs: Any) -> Any:
            step(f"{name} {args[:2]}")
            return originals[name](*args, **kwargs)
        return mutation

    def whole_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        step(f"rmtree {path}")
        inside_rmtree.append(path)
        try:
            rmtree(path, *args, **kwargs)
        finally:
            inside_rmtree.pop()

    for name in _MUTATIONS:
        setattr(os, name, wrap(name))
    shutil.rmtree = whole_rmtree  # type: ignore[assignment]
    try:
        yield done
    finally:
        for name, fn in originals.items():
            setattr(os, name, fn)
        shutil.rmtree = rmtree  # type: ignore[assignment]


# --------------------------------------------------------------- crash at every step
def test_a_crash_before_any_step_of_the_commit_leaves_every_date_whole(
        lake_root: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    last = small_marketplace(lake_root, days=3)
    earlier = last - timedelta(days=1)
    run_date(earlier, settings)
    old = run_date(last, settings).run_id
    earlier_bytes = _snapshot(lake_root, earlier)
    _more_reviews(lake_root, last)

    # Prepare a complete new attempt of `last`, stopping where it would commit.
    recorded: dict[str, Any] = {}

    class _Stop(BaseException):
        pass

    def record(self: Lake, *args: Any, **kwargs: Any) -> None:
        recorded.update(args=args, kwargs=kwargs)
        raise _Stop

    monkeypatch.setattr(Lake, "commit", record)
    with pytest.raises(_Stop):
        run_date(last, settings)
    monkeypatch.undo()
    key = recorded["args"][1]
    pairs = [*recorded["args"][0], *recorded["kwargs"].get("together", [])]
    runs_rel = next(attempt for public, attempt in pairs if public == f"runs/score_date={last}")
    new = json.loads((lake_root / runs_rel / "manifest.json").read_text())["run_id"]
    assert new != old

    steps = 0
    for k in range(1, 400):
        copy = tmp_path / f"crash-{k}"
        # Hard links are enough: publishing renames and removes files but never writes into one.
        shutil.copytree(lake_root, copy, symlinks=True, ignore=shutil.ignore_patterns("landing"),
                        copy_function=os.link)
        lake = Lake(copy)
        finished = False
        with _crash_before_step(k) as done:
            try:
                lake.commit(*recorded["args"], **recorded["kwargs"])
                finished = True
            except _Crash:
                pass
        where = f"crash before step {k} (after {done[-1:] or 'nothing'})"
        assert _visible_run(copy, last) in (old, new), where
        assert _snapshot(copy, earlier) == earlier_bytes, where
        # The next run of the date finishes an interrupted commit (redo from the journal); before the
        # journal was in place nothing had changed and the next run starts over.
        journaled = (copy / "_journal" / f"{key}.json").exists()
        lake.recover(key)
        assert _visible_run(copy, last, scans=False) == (new if journaled or finished else old), where
        assert not list((copy / "_journal").glob("*.json"))
        assert _snapshot(copy, earlier) == earlier_bytes, where
        shutil.rmtree(copy)
        if finished:
            steps = k - 1
            break
    assert steps > 20, f"the commit was expected to take many steps, not {steps}"


def _fake_attempt(root: Path, run_id: str, *, held: bool = False, failed: bool = False) -> str:
    """An attempt folder shaped like the pipeline's, every file stamped with ``run_id``."""
    base = root / "_attempts" / f"a-{run_id}"
    subs = [] if failed else ["scores", "state", "held_actions" if held else "actions"]
    for sub in subs:
        (base / sub).mkdir(parents=True)
        pq.write_table(pa.table({"merchant_id": ["M1", "M2"]}).replace_schema_metadata({"run_id": run_id}),
                       base / sub / "part-0.parquet")
    runs = base / ("runs_failed" if failed else "runs")
    runs.mkdir(parents=True)
    status = "failed" if failed else "held" if held else "published"
    (runs / "manifest.json").write_text(json.dumps({"run_id": run_id, "status": status}))
    (runs / "report.html").write_text("<!DOCTYPE html><title>r</title>")
    return f"_attempts/a-{run_id}"


def _own_partitions(day: date, work: str, *, held: bool) -> list[tuple[str, str]]:
    """The date's own partitions in the order publish() switches them."""
    feed, other = ("held_actions", "actions") if held else ("actions", "held_actions")
    return [(f"scores/score_date={day}", f"{work}/scores"), (f"state/enforcement/score_date={day}", f"{work}/state"),
            (f"{other}/score_date={day}", ""), (f"{feed}/score_date={day}", f"{work}/{feed}"),
            (f"runs/score_date={day}", f"{work}/runs")]


@pytest.mark.parametrize("before", ["nothing", "published", "held", "failed", "links_without_pointer"])
@pytest.mark.parametrize("held", [False, True], ids=["publish", "hold"])
def test_switching_a_date_is_atomic_whatever_it_showed_before(tmp_path: Path, before: str, held: bool) -> None:
    day = date(2026, 3, 5)
    base = tmp_path / "base"
    lake = Lake(base)
    key = f"score_date={day}"
    other_day = day - timedelta(days=1)
    lake.commit([], f"score_date={other_day}", together=_own_partitions(other_day, _fake_attempt(base, "r-other"),
                                                                       held=False))
    old: str | None = None
    if before in ("published", "held"):
        old = "r-old"
        lake.commit([], key, together=_own_partitions(day, _fake_attempt(base, old, held=before == "held"),
                                                      held=before == "held"))
    elif before == "failed":  # what record_failure publishes when a date has no run yet
        old = "r-failed"
        lake.commit([(f"runs/score_date={day}", f"{_fake_attempt(base, old, failed=True)}/runs_failed")], key)
    elif before == "links_without_pointer":  # per-partition links, as older builds published them
        old = "r-old"
        lake.commit(_own_partitions(day, _fake_attempt(base, old), held=False), key)
    assert _visible_run(base, day) == old
    other_bytes = _snapshot(base, other_day)
    new = "r-new"
    pairs = _own_partitions(day, _fake_attempt(base, new, held=held), held=held)
    for k in range(1, 200):
        copy = tmp_path / f"crash-{k}"
        shutil.copytree(base, copy, symlinks=True, copy_function=os.link)
        finished = False
        with _crash_before_step(k) as done:
            try:
                Lake(copy).commit([], key, together=pairs)
                finished = True
            except _Crash:
                pass
        where = f"{before} -> {'held' if held else 'published'}: crash before step {k} after {done[-1:]}"
        assert _visible_run(copy, day) in (old, new), where
        assert _snapshot(copy, other_day) == other_bytes, where
        journaled = (copy / "_journal" / f"{key}.json").exists()
        Lake(copy).recover(key)
        assert _visible_run(copy, day) == (new if finished or journaled else old), where
        if finished:
            assert not list((copy / "_current").glob(".*")), "a shim was left behind"
            assert not list((copy / "_tmp").glob("*")), "a temporary link was left behind"
            for attempt in (copy / "_attempts").iterdir():  # what no partition shows any more is gone
                if attempt.name not in ("a-r-other", "a-r-new"):
                    assert not [*attempt.rglob("*.parquet"), *attempt.rglob("manifest.json")], attempt
            break
        shutil.rmtree(copy)
    else:
        pytest.fail("the commit never finished")


# ---------------------------------------------------------------------- SIGKILL (a)
def test_sigkill_at_random_moments_never_exposes_a_partial_date(lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root, days=3)
    earlier = last - timedelta(days=1)
    assert run_date(earlier, settings).exit_code == 0
    _more_reviews(lake_root, last, "first")
    t0 = time.monotonic()
    first = _cli("run", "--date", str(last), root=lake_root)
    full = time.monotonic() - t0  # how long an uninterrupted run takes, start-up included
    assert first.returncode == 0, first.stderr
    old = _visible_run(lake_root, last)
    earlier_bytes = _snapshot(lake_root, earlier)
    _more_reviews(lake_root, last, "second")
    landing = _digest_tree(lake_root / "landing")
    rng = random.Random(20260301)
    seen = set()
    for _ in range(4):
        proc = _popen("run", "--date", str(last), root=lake_root)
        try:
            proc.wait(timeout=rng.uniform(0.3 * full, 1.05 * full))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        visible = _visible_run(lake_root, last)
        assert visible is not None
        seen.add(visible)
        assert _snapshot(lake_root, earlier) == earlier_bytes
        assert _digest_tree(lake_root / "landing") == landing  # landing files are never modified
    final = _cli("run", "--date", str(last), root=lake_root)
    assert final.returncode == 0, final.stderr
    new = _visible_run(lake_root, last)
    assert new != old
    assert seen <= {old, new}
    assert _snapshot(lake_root, earlier) == earlier_bytes
    assert not list((lake_root / "_journal").glob("*.json"))


# --------------------------------------------------------------------- two runs (b)
def _lock_is_held(path: Path) -> bool:
    if not path.exists():
        return False
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_a_second_run_of_the_same_date_is_refused_or_queued(lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root, days=3)
    # While a run holds the date (here this test holds its lock), another one stops at once and says why.
    with Lake(lake_root).lock(f"score_date={last}"):
        refused = _cli("run", "--date", str(last), root=lake_root)
    assert refused.returncode == 2, refused.stderr
    assert "another run" in refused.stderr
    assert "--wait" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (lake_root / "runs").exists()
    # Two real runs at once: with --wait the second queues behind the first and publishes after it.
    lock = lake_root / "_locks" / f"score_date={last}.lock"
    first = _popen("run", "--date", str(last), root=lake_root)
    deadline = time.monotonic() + 60
    while not _lock_is_held(lock):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run never took the date's lock"
        time.sleep(0.05)
    queued = _popen("run", "--date", str(last), "--wait", "120", root=lake_root)
    _, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    still_waiting = queued.poll() is None  # it could only start once the first run let go of the date
    manifest = lake_root / "runs" / f"score_date={last}" / "manifest.json"
    first_attempt = json.loads(manifest.read_text())["attempt_id"]  # the queued run needs seconds to publish
    _, err2 = queued.communicate(timeout=120)
    assert queued.returncode == 0, err2
    assert still_waiting
    # Never interleaved: the date is whole and shows the queued run's own attempt, published after the first.
    assert _visible_run(lake_root, last) is not None
    assert json.loads(manifest.read_text())["attempt_id"] != first_attempt
    assert not list((lake_root / "_journal").glob("*.json"))


# ------------------------------------------------------------------------- rerun (c)
def test_rerun_writes_the_same_rows_and_the_same_bytes(lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root, days=3)
    run_date(last - timedelta(days=1), settings)
    first = run_date(last, settings)
    part = lake_root / "scores" / f"score_date={last}"
    files1 = {p.name: p.read_bytes() for p in part.glob("*.parquet")}
    rows1 = pl.read_parquet(part)
    actions1 = pl.read_parquet(lake_root / "actions" / f"score_date={last}")
    second = run_date(last, settings)
    assert second.run_id == first.run_id
    assert pl.read_parquet(part).equals(rows1)
    assert pl.read_parquet(lake_root / "actions" / f"score_date={last}").equals(actions1)
    # Byte-identical: same rows, same order, same metadata, deterministic writer.
    assert {p.name: p.read_bytes() for p in part.glob("*.parquet")} == files1


# --------------------------------------------------------------- backfill resume (d, e)
def test_backfill_stops_at_a_bad_date_and_a_rerun_resumes_from_it(lake_root: Path) -> None:
    last = small_marketplace(lake_root, days=4)
    days = [START + timedelta(days=i) for i in range(4)]
    bad_day = days[2]
    broken = lake_root / "landing" / "reviews" / f"dt={bad_day}" / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    cmd = ("backfill", "--start", str(days[0]), "--end", str(last))
    r1 = _cli(*cmd, root=lake_root)
    assert r1.returncode == 3, r1.stdout + r1.stderr
    assert f"backfill stopped at {bad_day}" in r1.stderr
    assert "broken.jsonl.gz" in r1.stderr
    assert "Traceback" not in r1.stderr
    ids = _published_run_ids(lake_root)
    assert set(ids) == {days[0], days[1], bad_day}
    published_bytes = {d: _snapshot(lake_root, d) for d in days[:2]}
    status = _cli("status", root=lake_root)
    assert status.returncode == 0, status.stderr
    lines = {d: next(line for line in status.stdout.splitlines() if str(d) in line) for d in days[:3]}
    assert "published" in lines[days[0]]
    assert "published" in lines[days[1]]
    assert "failed" in lines[bad_day]
    assert "3" in [c.strip() for c in lines[days[0]].split("│")]  # three merchants scored

    broken.unlink()  # upstream re-delivered; the same command resumes
    r2 = _cli(*cmd, root=lake_root)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "ran 2 date(s), skipped 2 already published" in r2.stdout
    ran = [line.split()[0] for line in r2.stdout.splitlines() if line.startswith("  ")]
    assert ran == [str(d) for d in days[2:]]  # in order, from the first unpublished date
    assert {d: _snapshot(lake_root, d) for d in days[:2]} == published_bytes  # skipped dates untouched
    ids = _published_run_ids(lake_root)
    assert set(ids) == set(days)
    assert all(ids[d] is not None for d in days)
    status = _cli("status", root=lake_root)
    for d in days:
        line = next(line for line in status.stdout.splitlines() if str(d) in line)
        assert "published" in line
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        assert float(cells[-1]) > 0  # seconds
