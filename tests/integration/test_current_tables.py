"""Current-version tables carried night to night equal versioning the staged window again."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from tests.integration.test_accounting_carry import _late_version
from transforms.current import WINDOW_SOURCES, table_rel
from transforms.generate import generate_marketplace
from transforms.pipeline import run_date
from transforms.policy import default_policy_path
from transforms.schemas import SOURCES
from transforms.settings import Settings
from transforms.validation import current_versions

pytestmark = pytest.mark.slow

#: A short window, so that nightly runs also drop delivery days off its start.
EXTENDED_DAYS = 8


def _settings(tmp_path: Path, root: Path) -> Settings:
    raw = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    raw["window"].update({"days": 5, "extended_days": EXTENDED_DAYS})
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return Settings(root=str(root), policy_path=path)


def _reference(root: Path, source: str, day: date) -> pl.DataFrame:
    """The window's staged partitions versioned from scratch (what the table must hold)."""
    spec = SOURCES[source]
    ws = day - timedelta(days=EXTENDED_DAYS - 1)
    files = [str(f) for d in sorted((root / "staged" / source).iterdir())
             if ws <= date.fromisoformat(d.name.removeprefix("dt=")) <= day for f in d.glob("*.parquet")]
    frame = current_versions(pl.scan_parquet(files), spec).collect().drop("_file", "_row_number", "_row_hash")
    return frame.filter(pl.col("merchant_id").is_not_null()).sort(list(spec.key))


def _table(root: Path, source: str, day: date) -> pl.DataFrame:
    files = sorted((root / table_rel(source, day)).glob("*.parquet"))
    return pl.read_parquet(files).drop("_key_hash", "_bucket").sort(list(SOURCES[source].key))


def _modes(root: Path, day: date) -> dict[str, Any]:
    m = json.loads((root / "runs" / f"score_date={day}" / "manifest.json").read_text())
    return {s: (t["mode"], t.get("from")) for s, t in m["current_tables"].items()}


def _scores(root: Path, day: date) -> pl.DataFrame:
    return pl.read_parquet(root / "scores" / f"score_date={day}").drop("run_id")


def _measures(root: Path, day: date) -> pl.DataFrame:
    """The columns measured from the window (tiers and actions also depend on earlier nights)."""
    frame = _scores(root, day)
    kinds = ("score", "_count", "_rate", "_shrunk", "_ci_low", "_ci_high", "_percentile", "_median", "_p90", "_mean")
    return frame.select("merchant_id", "score_upper", *[c for c in frame.columns if c.endswith(kinds)])


def test_carried_tables_equal_versioning_the_window_again(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    end = generate_marketplace(root, merchants=120, days=16, seed=3, show_progress=False,
                               malformed_row_share=0.0, gb18030_share=0.0).end
    fresh_landing = tmp_path / "landing-copy"
    shutil.copytree(root / "landing", fresh_landing)
    st = _settings(tmp_path, root)

    def check(day: date) -> dict[str, Any]:
        assert run_date(day, st).exit_code in (0, 4)
        for s in WINDOW_SOURCES:
            if not (root / table_rel(s, day)).exists():  # a rerun's table, older than the kept ones
                continue
            assert_frame_equal(_table(root, s, day), _reference(root, s, day), check_row_order=True)
        return _modes(root, day)

    # Nightly: the first run builds the tables, each later one carries the night before.
    assert check(end - timedelta(days=4)) == {s: ("rebuilt", None) for s in WINDOW_SOURCES}
    for k in (3, 2, 1):
        day = end - timedelta(days=k)
        assert check(day) == {s: ("carried", str(day - timedelta(days=1))) for s in WINDOW_SOURCES}
    assert all(_table(root, s, end - timedelta(days=1)).height for s in WINDOW_SOURCES)  # something was carried
    # A late re-delivery restages an old day inside the window when its date is rerun: the
    # tables of later dates read the old partition, so the next night rebuilds ...
    landing = root / "landing" / "complaints"
    first = next(d for d in (end - timedelta(days=k) for k in (7, 6, 8))
                 if any(p.suffix in (".jsonl", ".csv") for p in (landing / f"dt={d}").iterdir()))
    _late_version(root, first, end - timedelta(days=5))
    check(end - timedelta(days=5))
    assert check(end)["complaints"] == ("rebuilt", None)
    # ... and the measures are the very ones a lake that only ever ran `end` publishes.
    other = tmp_path / "other"
    shutil.copytree(fresh_landing, other / "landing")
    _late_version(other, first, end - timedelta(days=5))
    other_st = _settings(tmp_path, other)
    assert run_date(end, other_st).exit_code in (0, 4)
    assert_frame_equal(_measures(root, end), _measures(other, end))
    # Only the newest tables are kept.
    assert len(list((root / "agg" / "current" / "sales").iterdir())) == 3


def test_carried_scores_equal_rebuilt_scores(tmp_path: Path) -> None:
    """Nights that carried their tables publish what the same nights publish rebuilding them."""
    root = tmp_path / "lake"
    end = generate_marketplace(root, merchants=150, days=12, seed=5, show_progress=False,
                               malformed_row_share=0.0, gb18030_share=0.0).end
    other = tmp_path / "other"
    shutil.copytree(root / "landing", other / "landing")
    st, other_st = _settings(tmp_path, root), _settings(tmp_path, other)
    for k in (2, 1, 0):
        day = end - timedelta(days=k)
        shutil.rmtree(other / "agg" / "current", ignore_errors=True)  # nothing to carry: rebuilt
        assert run_date(day, st).exit_code in (0, 4)
        assert run_date(day, other_st).exit_code in (0, 4)
        assert set(_modes(other, day).values()) == {("rebuilt", None)}
        assert_frame_equal(_scores(root, day), _scores(other, day))
    assert set(_modes(root, end).values()) == {("carried", str(end - timedelta(days=1)))}


def test_a_retried_prepare_score_still_publishes_the_review_aggregates_it_built(tmp_path: Path) -> None:
    """A retry finds the first try's aggregates in the attempt; their switches must not be lost with its notes."""
    from transforms.pipeline import RunContext, ingest, prepare_score, validate

    root = tmp_path / "lake"
    end = generate_marketplace(root, merchants=40, days=6, seed=5, show_progress=False,
                               malformed_row_share=0.0, gb18030_share=0.0).end
    st = _settings(tmp_path, root)
    validated = validate(ingest(end, st), st).to_json()

    def review_switches(ctx: RunContext) -> set[str]:
        return {p[0] for p in ctx.notes.get("agg_switches", []) if p[0].startswith("agg/reviews/")}

    first = prepare_score(RunContext.from_json(json.loads(json.dumps(validated))), st, pool=None)
    # The task is retried from the context validate saved: the first try built the days, its notes are gone.
    retry = prepare_score(RunContext.from_json(json.loads(json.dumps(validated))), st, pool=None)
    assert review_switches(first)
    assert review_switches(retry) == review_switches(first)
