"""Staging and validating sources in worker processes changes nothing in the outputs."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.landing import START, merchant, small_marketplace, write_rows
from transforms import pipeline
from transforms.pipeline import run_date
from transforms.settings import Settings

pytestmark = pytest.mark.slow

#: Differ between any two runs: random attempt ids and wall-clock timings.
VOLATILE = {"attempt_id", "staged_attempt", "timings_seconds", "seconds"}


def _partitions(root: Path) -> dict[str, pl.DataFrame]:
    out = {}
    for top in ("staged", "quarantine", "scores", "actions", "held_actions", "agg", "state"):
        for dirpath, _, files in os.walk(root / top, followlinks=True):
            for f in files:
                if f.endswith(".parquet"):
                    df = pl.read_parquet(Path(dirpath) / f)
                    out[str((Path(dirpath) / f).relative_to(root))] = df.sort(df.columns)
    return out


def _clean(o: Any) -> Any:
    if isinstance(o, str):
        return re.sub(r"_attempts/[0-9a-f]{12}/", "_attempts/<attempt>/", o)
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items() if k not in VOLATILE}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


def test_sources_staged_in_worker_processes_give_identical_outputs(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    one = tmp_path / "one"
    last = small_marketplace(one, days=3, merchants=30)
    # Something for every part of the staging report: a rejected file, quarantined rows, a row of a
    # merchant unknown on its delivery day (checked against the registry validated first).
    (one / "landing" / "reviews" / f"dt={last}" / "broken.csv.gz").write_bytes(
        gzip.compress(b"review_id,merchant_id\nR,M\n" * 50)[:40])
    write_rows(one, "sales", last, [{"merchant_id": "M1", "date": str(last), "orders": -1, "late_shipments": 0,
                                     "cancellations": 0}], name="bad")
    write_rows(one, "merchants", last, [merchant("LATECOMER")], name="new")
    write_rows(one, "sales", START, [{"merchant_id": "LATECOMER", "date": str(START), "orders": 3,
                                      "late_shipments": 0, "cancellations": 0}], name="early")
    two = tmp_path / "two"
    shutil.copytree(one / "landing", two / "landing")

    sizes: list[int] = []
    real_pool = pipeline.worker_pool

    def recording_pool(size: int, log_format: str = "text") -> Any:
        sizes.append(size)
        return real_pool(size, log_format)

    monkeypatch.setattr(pipeline, "worker_pool", recording_pool)
    earlier = last - timedelta(days=1)
    for root, workers in ((one, 1), (two, 2)):
        # Thresholds at zero: even this small lake goes to the pool when workers > 1.
        st = Settings(root=str(root), workers=workers, parallel_min_bytes=0, parallel_min_rows=0)
        assert run_date(earlier, st).exit_code == 0
        failed = run_date(last, st)  # the broken file fails the date closed, in both modes
        assert failed.exit_code == 3
        assert "broken.csv.gz" in failed.message
    # Per mode: ingest, validate and score (tables and shards) of the published date, then
    # ingest and validate of the failed one.
    assert sizes == [1] * 5 + [2] * 5

    a, b = _partitions(one), _partitions(two)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("quarantine/sales") and v.height for k, v in a.items())
    for k in a:
        assert a[k].equals(b[k]), k
    for day in (earlier, last):
        ma, mb = (json.loads((r / "runs" / f"score_date={day}" / "manifest.json").read_text()) for r in (one, two))
        assert _clean(ma) == _clean(mb)


def test_small_validate_batches_read_only_the_earlier_partitions_they_need(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of a few hundred rows (many per day, many days) stage exactly what one batch does.

    Each later batch reads only the earlier partitions of this run that hold one of its keys;
    the generated marketplace re-delivers rows and updates complaints and returns across days,
    so a partition it wrongly skipped would turn a duplicate or a newer version into a new row.
    """
    from transforms.generate import generate_marketplace

    big, small = tmp_path / "big", tmp_path / "small"
    end = generate_marketplace(big, merchants=40, days=10, seed=5, show_progress=False).end
    # Reviews delivered again days later: unchanged (duplicates) and with one row changed (a conflict).
    first = big / "landing" / "reviews" / "dt=2026-01-02" / "reviews_20260102_01.jsonl"
    shutil.copy(first, big / "landing" / "reviews" / "dt=2026-01-07" / "again.jsonl")
    lines = first.read_text(encoding="utf-8").splitlines()[:3]
    changed = [json.dumps(json.loads(line) | {"rating": 1 + json.loads(line)["rating"] % 5}) for line in lines]
    (big / "landing" / "reviews" / "dt=2026-01-09" / "changed.jsonl").write_text("\n".join(changed) + "\n")
    shutil.copytree(big / "landing", small / "landing")
    assert run_date(end, Settings(root=str(big), workers=1)).exit_code == 0
    scanned: list[int] = []
    real_scan = pipeline.Lake.scan_partitions

    def counting_scan(self: Any, dirs: list[str], *args: Any, **kwargs: Any) -> Any:
        scanned.append(len(dirs))
        return real_scan(self, dirs, *args, **kwargs)

    monkeypatch.setattr(pipeline, "VALIDATE_BATCH_ROWS", 60)
    monkeypatch.setattr(pipeline.Lake, "scan_partitions", counting_scan)
    assert run_date(end, Settings(root=str(small), workers=1)).exit_code == 0
    a, b = _partitions(big), _partitions(small)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].equals(b[k]), k
    ma, mb = (json.loads((r / "runs" / f"score_date={end}" / "manifest.json").read_text()) for r in (big, small))
    assert _clean(ma) == _clean(mb)
    reviews = mb["sources"]["reviews"]["by_delivery_day"]
    assert reviews["2026-01-07"]["duplicate"] > 0
    assert reviews["2026-01-09"]["quarantined_by_reason"].get("conflicting_duplicate", 0) > 0
    assert sum(e["superseded"] for e in mb["sources"]["returns"]["by_delivery_day"].values()) > 0
    assert len(scanned) > 20  # many batches
    assert min(scanned) < max(scanned)  # not every batch reads every earlier partition
