"""Superseded counts carried from the previous run equal counting the whole history again."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from transforms import validation
from transforms.generate import generate_marketplace
from transforms.pipeline import run_date
from transforms.schemas import SOURCES
from transforms.settings import Settings

pytestmark = pytest.mark.slow

VERSIONED = [s for s, spec in SOURCES.items() if spec.versioning == "versioned"]


def _from_scratch(root: Path, source: str, day: date) -> dict[str, int]:
    """Every staged version up to ``day`` ranked again (the reference the carry must equal)."""
    spec = SOURCES[source]
    files = [str(f) for d in sorted((root / "staged" / source).iterdir())
             if date.fromisoformat(d.name.removeprefix("dt=")) <= day for f in d.glob("*.parquet")]
    counts = validation.superseded_by_day(pl.scan_parquet(files), spec)
    return {d.isoformat(): n for d, n in counts.iter_rows()}


def _published(root: Path, day: date) -> dict[str, dict[str, int]]:
    m = json.loads((root / "runs" / f"score_date={day}" / "manifest.json").read_text())
    assert m["status"] in ("published", "held")
    return {s: {d: e["superseded"] for d, e in m["sources"][s]["by_delivery_day"].items() if e["superseded"]}
            for s in VERSIONED}


def _late_version(root: Path, first: date, late: date) -> None:
    """Re-deliver on day ``late`` a newer version of a complaint first delivered on ``first``."""
    folder = root / "landing" / "complaints" / f"dt={first}"
    src = next(p for p in sorted(folder.iterdir()) if p.name.endswith((".jsonl", ".csv")))
    frame = (pl.read_ndjson(src, infer_schema_length=None) if src.suffix == ".jsonl"
             else pl.read_csv(src, infer_schema=False))
    row: dict[str, Any] = {k: (None if v is None else str(v)) for k, v in frame.row(0, named=True).items()}
    row["updated_at"] = f"{late}T12:00:00Z"  # after every version of `first`, before `late` ends
    (root / "landing" / "complaints" / f"dt={late}" / "late-correction.jsonl").write_text(json.dumps(row) + "\n")


def test_carried_superseded_counts_equal_a_full_recount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lake"
    end = generate_marketplace(root, merchants=120, days=16, seed=3, show_progress=False,
                               malformed_row_share=0.0, gb18030_share=0.0).end
    settings = Settings(root=str(root))
    carried: list[tuple[str, date | None]] = []
    real = validation._carried_superseded

    def spy(lake: Any, ctx: Any, source: str, attempts: Any) -> Any:
        out = real(lake, ctx, source, attempts)
        carried.append((f"{ctx.score_date}/{source}", out and out[0]))
        return out

    monkeypatch.setattr(validation, "_carried_superseded", spy)

    def check(day: date) -> None:
        assert run_date(day, settings).exit_code in (0, 4)
        assert _published(root, day) == {s: _from_scratch(root, s, day) for s in VERSIONED}, day

    # Nightly: the first run counts from scratch, each later one carries the one before.
    for k in (3, 2, 1, 0):
        check(end - timedelta(days=k))
    assert [p for _, p in carried[:len(VERSIONED)]] == [None] * len(VERSIONED)
    assert all(p == date.fromisoformat(key[:10]) - timedelta(days=1) for key, p in carried[len(VERSIONED):])
    assert sum(_from_scratch(root, "returns", end).values()) > 0  # there was something to carry
    # A rerun of an earlier date carries from the date before it, not from later runs.
    carried.clear()
    check(end - timedelta(days=2))
    assert {p for _, p in carried} == {end - timedelta(days=3)}
    # A late re-delivery for an old day is staged when that date is rerun; the counts carried by
    # later dates no longer apply to the restaged day, so the next of them recounts ...
    _late_version(root, end - timedelta(days=12), end - timedelta(days=8))
    check(end - timedelta(days=8))
    carried.clear()
    check(end - timedelta(days=1))
    assert dict(carried)[f"{end - timedelta(days=1)}/complaints"] is None
    # ... and the next run carries again (the restaged day's new attempt is in the manifest it carries from).
    carried.clear()
    check(end)
    assert dict(carried)[f"{end}/complaints"] == end - timedelta(days=1)
