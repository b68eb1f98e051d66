"""The governance report: a self-contained page whose charts are drawn from the data."""

from __future__ import annotations

import json
import random
import time
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from transforms.cli import app
from transforms.lake import Lake
from transforms.report import ReportInputs, render_report, write_report

DAY = date(2026, 3, 10)
TIERS = [("good_standing", 70.0), ("watch", 58.0), ("warning", 45.0), ("restricted", 30.0), ("suspended", 0.0)]
SECTIONS = ("distribution", "tiers", "movers", "attention", "validation")
VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "track", "wbr"}
MARKS = {"rect", "circle", "path"}


def _band(score: float) -> str:
    return next(name for name, lo in TIERS if score >= lo)


def _scores(n: int, day: date, seed: int, *, enforcement_columns: bool = True) -> pl.DataFrame:
    rng = random.Random(seed)
    cats = ["apparel", "electronics", "food", "食品 & <b>drinks</b>"]
    rows = []
    for i in range(n):
        score = max(0.0, min(100.0, rng.gauss(76, 12)))
        sufficient = rng.random() > 0.3
        rows.append({
            "merchant_id": f"M{i:05d}", "score_date": day, "score": score,
            "tier": _band(score) if sufficient else "insufficient_evidence", "category": cats[i % len(cats)],
            "reason_codes": ["quality_defect_rate_high"] if score < 60 else [], "complaint_count": rng.randint(0, 40),
            "surge_complaint_count": rng.randint(5, 30) if i % 97 == 0 else 0,
            "is_collective_complaint": i % 211 == 0,
        })
    frame = pl.DataFrame(rows)
    if not enforcement_columns:
        frame = frame.drop("surge_complaint_count", "is_collective_complaint")
    return frame


def _manifest(status: str = "published", *, held: bool = False) -> dict[str, Any]:
    day = DAY.isoformat()
    sources = {}
    for k, name in enumerate(("merchants", "sales", "reviews", "complaints", "returns")):
        today = {"read": 1000 + k, "accepted": 990, "quarantined": 7 + k, "duplicate": 3, "superseded": 0,
                 "quarantined_by_reason": {"out_of_range:rating": 4 + k, "unknown_merchant": 3}}
        sources[name] = {
            "files_read": 2, "file_failures": [], "bad_paths": [], "extra_columns": {},
            "validation": {"suite": f"{name}_suite", "success": k % 2 == 0, "batch_failures": []},
            "rows": {"read": 9000, "accepted": 8800, "quarantined": 60, "duplicate": 40, "superseded": 100,
                     "balanced": True},
            "quarantined_by_reason": {"out_of_range:rating": 40, "unknown_merchant": 20},
            "by_delivery_day": {day: today},
        }
    actions_key = "held_actions" if held else "actions"
    return {
        "schema_version": "1.0.0", "score_date": day, "run_id": "r0123456789abcdef", "attempt_id": "abc",
        "status": status, "exit_code": 4 if held else 0,
        "policy": {"version": "2026.11.0", "digest": "x", "path": "packaged"}, "code_version": "0.1.0",
        "sources": sources,
        "gate": {"passed": True, "tripped": [], "override": False,
                 "checks": [{"rule": "quarantine_share", "limit": 0.05, "source": "sales"}]},
        "timings_seconds": {"ingest": 0.5, "validate": 2.0, "score": 1.0},
        "enforcement": {"new_penalties": 3, "held": held, "hold_reason": "too many new penalties" if held else None},
        "outputs": {"scores": {"path": f"scores/score_date={day}", "rows": 10},
                    actions_key: {"path": f"{actions_key}/score_date={day}", "rows": 3}},
        "error": None,
    }


def _actions(scores: pl.DataFrame) -> pl.DataFrame:
    some = scores.filter(pl.col("score") < 58).head(5)
    return some.select("merchant_id", pl.lit("escalate").alias("action"), pl.lit("good_standing").alias("from_tier"),
                       pl.col("tier").alias("to_tier"))


class _Page(HTMLParser):
    """Checks nesting and collects what the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: set[str] = set()
        self.svg_marks: list[int] = []
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        for k in ("href", "src", "xlink:href"):
            if a.get(k):
                self.refs.append(str(a[k]))
        if tag == "svg":
            self.svg_marks.append(0)
        elif tag in MARKS and "svg" in self.stack:
            self.svg_marks[-1] += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag in MARKS and "svg" in self.stack:
            self.svg_marks[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1]}>"
        self.stack.pop()


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    assert not p.stack, f"unclosed tags: {p.stack}"
    return p


def _assert_self_contained(page: str, parsed: _Page) -> None:
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert not ({"link", "img", "iframe", "object"} & parsed.tags)
    assert all(not r.startswith(("//", "data:text/html")) for r in parsed.refs)
    assert all(n > 0 for n in parsed.svg_marks), f"a chart without data marks: {parsed.svg_marks}"


def test_the_report_is_self_contained_and_every_chart_has_data() -> None:
    today = _scores(400, DAY, 1)
    before = _scores(400, DAY - timedelta(days=1), 2)
    page = render_report(ReportInputs(DAY, _manifest(), today, before, _actions(today), TIERS))
    parsed = _parse(page)
    _assert_self_contained(page, parsed)
    assert set(SECTIONS) <= parsed.ids
    assert len(parsed.svg_marks) >= 7  # histograms, tier bars, transitions, movers, actions, flagged, validation x3
    assert "data_docs/index.html" in parsed.refs
    assert "Tier transition matrix" in page
    assert "collective complaint" in page
    # Data is escaped, never interpreted as markup.
    assert "<b>drinks</b>" not in page
    assert "&lt;b&gt;drinks&lt;/b&gt;" in page
    for name, _ in TIERS[:-1]:
        assert f"{name} ≥" in page  # threshold lines of the policy


def test_the_first_day_and_missing_enforcement_columns_are_handled() -> None:
    today = _scores(120, DAY, 3, enforcement_columns=False)
    page = render_report(ReportInputs(DAY, _manifest(), today, None, None, []))
    parsed = _parse(page)
    _assert_self_contained(page, parsed)
    assert set(SECTIONS) <= parsed.ids
    assert "No earlier published date" in page
    assert "is_collective_complaint" in page  # says the flag is not available
    assert "Tier transition matrix" not in page


def test_a_held_run_shows_the_held_actions() -> None:
    today = _scores(200, DAY, 4)
    held = _actions(today)
    page = render_report(ReportInputs(DAY, _manifest("held", held=True), today, _scores(200, DAY, 5), held, TIERS))
    parsed = _parse(page)
    _assert_self_contained(page, parsed)
    assert "HELD" in page
    assert "too many new penalties" in page
    for mid in held.get_column("merchant_id").to_list():
        assert mid in page


def test_a_failed_run_still_renders_its_validation() -> None:
    m = _manifest("failed")
    m["error"] = {"stage": "validate", "message": "reviews dt=2026-03-10: 9 of 10 rows quarantined",
                  "hint": "inspect the quarantine"}
    m.pop("outputs")
    page = render_report(ReportInputs(DAY, m, pl.DataFrame(), None, None, []))
    parsed = _parse(page)
    _assert_self_contained(page, parsed)
    assert "9 of 10 rows quarantined" in page
    assert "nothing was published" in page
    assert "validation" in parsed.ids


def test_the_report_is_fast_for_2000_merchants() -> None:
    today = _scores(2000, DAY, 6)
    before = _scores(2000, DAY - timedelta(days=1), 7)
    inputs = ReportInputs(DAY, _manifest(), today, before, _actions(today), TIERS)
    render_report(inputs)  # warm-up
    t0 = time.perf_counter()
    render_report(inputs)
    assert time.perf_counter() - t0 < 1.0


def test_report_command_rewrites_the_page_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lake"
    runs = root / "runs" / f"score_date={DAY}"
    runs.mkdir(parents=True)
    m = _manifest()
    m["outputs"]["actions"] = {"path": f"actions/score_date={DAY}", "rows": 0}
    (runs / "manifest.json").write_text(json.dumps(m))
    (root / "scores" / f"score_date={DAY}").mkdir(parents=True)
    _scores(50, DAY, 8).write_parquet(root / "scores" / f"score_date={DAY}" / "part-0.parquet")
    (runs / "report.html").write_text("old")
    result = CliRunner().invoke(app, ["report", "--date", DAY.isoformat(), "--root", str(root)])
    assert result.exit_code == 0, result.output
    page = (runs / "report.html").read_text(encoding="utf-8")
    _assert_self_contained(page, _parse(page))
    assert sorted(p.name for p in runs.iterdir()) == ["manifest.json", "report.html"]  # no temporary file left
    missing = CliRunner().invoke(app, ["report", "--date", "2026-01-01", "--root", str(root)])
    assert missing.exit_code == 2
    assert write_report(Lake(root), DAY) == runs / "report.html"
