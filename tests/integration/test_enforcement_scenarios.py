"""End to end: the blast-radius guard holds a faulty day (exit 4), `release` publishes it, `shadow` stays aside."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from tests.landing import START, small_marketplace, write_rows
from transforms.cli import app
from transforms.pipeline import run_date
from transforms.policy import default_policy_path
from transforms.settings import Settings

pytestmark = pytest.mark.slow

MERCHANTS = 40
FAULTY = [f"M{i}" for i in range(2, 16)]  # 14 of 40 merchants (35 %)


def _policy(tmp_path: Path) -> Path:
    """The active policy, with a wider volume band so the faulty delivery passes validation.

    The validation gate's volume band is a separate defence (it would reject this day
    outright); here the fault must get through it to reach enforcement.
    """
    raw = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    raw["gate"]["volume_band"] = [0.0, 1000.0]
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return p


def _manifest(root: Path, day: date) -> dict:  # type: ignore[type-arg]
    return json.loads((root / "runs" / f"score_date={day}" / "manifest.json").read_text())


def _faulty_day(root: Path, day: date) -> None:
    """A mis-coded returns feed: 60 quality-defect returns for each of 14 merchants, all on one day."""
    rows = [{"return_id": f"F{m}-{k}", "merchant_id": m, "order_id": f"FO{m}-{k}",
             "requested_at": f"{day}T06:00:00Z", "reason": "quality_defect", "status": "requested",
             "refund_amount": None, "resolved_at": None, "updated_at": None}
            for m in FAULTY for k in range(60)]
    write_rows(root, "returns", day, rows, name="fault")


def test_faulty_day_is_held_with_exit_4_and_release_publishes_it(lake_root: Path, tmp_path: Path) -> None:
    st = Settings(root=str(lake_root), policy_path=_policy(tmp_path))
    last = small_marketplace(lake_root, days=17, merchants=MERCHANTS)
    before = last - timedelta(days=1)
    assert run_date(before, st).exit_code == 0  # 16 days of history: the reference for the guard
    _faulty_day(lake_root, last)

    result = run_date(last, st)
    assert (result.status, result.exit_code) == ("held", 4), result.message
    assert "reputation release" in result.message
    assert not (lake_root / "actions" / f"score_date={last}").exists()
    held = pl.read_parquet(lake_root / "held_actions" / f"score_date={last}")
    # The 14 mis-coded merchants, and M1: the fault's 840 fresh returns lower its category's
    # after-sales benchmark, so M1's (really unprocessed) returns cross the after-sales rule
    # that day. Both are the fault's doing, and both are held.
    assert sorted(held["merchant_id"]) == sorted([*FAULTY, "M1"])
    assert set(held["to_tier"]) == {"warning"}
    codes = dict(zip(held["merchant_id"], held["reason_codes"], strict=True))
    assert all("hard_rule:quality_defect_rate" in codes[m] for m in FAULTY)
    assert "hard_rule:after_sales_failure_rate" in codes["M1"]
    m = _manifest(lake_root, last)
    assert m["status"] == "held"
    assert m["exit_code"] == 4
    assert m["enforcement"]["guard"]["count"] == len(FAULTY) + 1
    assert m["enforcement"]["new_penalties"] == 0
    # The carried state did not advance: nobody was penalised, the counted merchants are frozen.
    state = pl.read_parquet(lake_root / "state" / "enforcement" / f"score_date={last}")
    faulty = state.filter(pl.col("merchant_id").is_in(FAULTY))
    assert set(faulty["enforced_tier"]) == {"good_standing"}
    assert faulty["guard_hold_since"].to_list() == [last] * len(FAULTY)
    scores = pl.read_parquet(lake_root / "scores" / f"score_date={last}").filter(pl.col("merchant_id").is_in(FAULTY))
    assert set(scores["tier"]) == {"good_standing"}
    assert set(scores["proposed_tier"]) == {"warning"}

    # A rerun of the date reproduces the same held actions.
    again = run_date(last, st)
    assert again.exit_code == 4
    assert pl.read_parquet(lake_root / "held_actions" / f"score_date={last}").equals(held)

    # After review, release publishes them and advances the state of the date.
    out = CliRunner().invoke(app, ["release", "--date", str(last), "--root", str(lake_root)])
    assert out.exit_code == 0, out.output
    assert "released" in out.output
    published = pl.read_parquet(lake_root / "actions" / f"score_date={last}")
    assert published.drop("run_id").equals(held.drop("run_id"))
    assert not (lake_root / "held_actions" / f"score_date={last}").exists()
    state = pl.read_parquet(lake_root / "state" / "enforcement" / f"score_date={last}")
    assert set(state.filter(pl.col("merchant_id").is_in(FAULTY))["enforced_tier"]) == {"warning"}
    assert state["guard_hold_since"].null_count() == state.height
    m = _manifest(lake_root, last)
    assert (m["status"], m["released"], m["exit_code"]) == ("published", True, 0)
    assert m["outputs"]["actions"]["rows"] == len(FAULTY) + 1
    scores = pl.read_parquet(lake_root / "scores" / f"score_date={last}").filter(pl.col("merchant_id").is_in(FAULTY))
    assert set(scores["tier"]) == {"warning"}
    again = CliRunner().invoke(app, ["release", "--date", str(last), "--root", str(lake_root)])
    assert again.exit_code == 2
    assert "not held" in again.output

    # Rerunning the released date reproduces the released day: the same actions were reviewed.
    released_bytes = {p: p.read_bytes() for p in sorted((lake_root / "actions").rglob("*.parquet"))}
    rerun = run_date(last, st)
    assert (rerun.status, rerun.exit_code) == ("published", 0), rerun.message
    assert "released after review on an earlier run" in rerun.message
    assert pl.read_parquet(lake_root / "actions" / f"score_date={last}").equals(published)
    assert {p: p.read_bytes() for p in sorted((lake_root / "actions").rglob("*.parquet"))} == released_bytes
    assert not (lake_root / "held_actions" / f"score_date={last}").exists()
    assert _manifest(lake_root, last)["released"] is True

    # `explain` tells a penalised merchant the way out of its *enforced* tier, and what the score needs.
    out = CliRunner().invoke(app, ["explain", "M2", "--date", str(last), "--root", str(lake_root), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    en = data["enforcement"]
    policy = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    e = policy["enforcement"]
    watch = next(t for t in policy["tiers"] if t["name"] == "watch")
    assert (en["enforced_tier"], en["next_tier"]) == ("warning", "watch")
    assert en["optimistic_score_needed"] == watch["min_score"] + e["hysteresis_points"]
    assert en["earliest_step_down"] == str(last + timedelta(days=e["min_days_in_tier"]))
    assert en["hard_rules"] == ["quality_defect_rate"]
    assert any("quality_defect_rate released" in n for n in en["needs"])
    # Each single-dimension option reaches the next score band on its own (the composite is geometric).
    cf = data["counterfactual"]
    weights = {d: v["weight"] for d, v in data["dimensions"].items()}
    band = next(t["min_score"] for t in policy["tiers"] if t["name"] == cf["next_tier"])
    assert cf["options"]
    for o in cf["options"]:
        d = o["dimension"]
        moved = data["score"] * (o["needed_subscore"] / max(o["current_subscore"], 1.0)) ** weights[d]
        assert moved == pytest.approx(band, rel=1e-3), o
    r = cf["rolloff"]
    assert r["oldest_evidence_leaves_on"] == str(last + timedelta(days=1))
    assert r["all_current_evidence_gone_by"] == str(last + timedelta(days=r["window_days"]))
    text = CliRunner().invoke(app, ["explain", "M2", "--date", str(last), "--root", str(lake_root)])
    assert "to step down from warning to watch" in text.output


def test_shadow_scores_a_candidate_policy_without_touching_published_outputs(lake_root: Path,
                                                                              tmp_path: Path) -> None:
    last = small_marketplace(lake_root, days=15, merchants=12)
    # Two merchants with many quality defects so tiers and actions differ between policies.
    write_rows(lake_root, "returns", last - timedelta(days=1), [
        {"return_id": f"D{m}-{k}", "merchant_id": m, "order_id": f"DO{m}-{k}", "requested_at": f"{START}T06:00:00Z",
         "reason": "quality_defect", "status": "refunded", "refund_amount": 10.0, "resolved_at": None,
         "updated_at": None} for m in ("M3", "M4") for k in range(3)], name="defects")
    st = Settings(root=str(lake_root))
    assert run_date(last, st).exit_code == 0
    published = {p: p.read_bytes() for p in sorted((lake_root / "scores").rglob("*.parquet"))
                 + sorted((lake_root / "actions").rglob("*.parquet"))
                 + sorted((lake_root / "state").rglob("*.parquet"))}
    raw = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    raw["version"] = "candidate-strict"
    raw["tiers"] = [{"name": "good_standing", "min_score": 95}, {"name": "watch", "min_score": 90},
                    {"name": "warning", "min_score": 45}, {"name": "restricted", "min_score": 30},
                    {"name": "suspended", "min_score": 0}]
    cand = tmp_path / "candidate.yaml"
    cand.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")

    out = CliRunner().invoke(app, ["shadow", "--date", str(last), "--policy", str(cand), "--root", str(lake_root)])
    assert out.exit_code == 0, out.output
    assert "candidate-strict" in out.output
    folder = lake_root / "shadow" / "candidate-strict" / f"score_date={last}"
    diff = pl.read_parquet(folder / "diff.parquet")
    assert {"merchant_id", "active_tier", "candidate_tier", "score_delta", "candidate_reasons"} <= set(diff.columns)
    assert diff.height == 12
    assert diff["tier_changed"].sum() > 0
    assert (folder / "scores.parquet").exists()
    assert (folder / "actions.parquet").exists()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["candidate_version"] == "candidate-strict"
    assert summary["tier_changes"] == diff["tier_changed"].sum()
    after = {p: p.read_bytes() for p in published}
    assert after == published
    assert sorted(published) == sorted(sorted((lake_root / "scores").rglob("*.parquet"))
                                       + sorted((lake_root / "actions").rglob("*.parquet"))
                                       + sorted((lake_root / "state").rglob("*.parquet")))
    assert not any(p.name.startswith("shadow-") for p in (lake_root / "_attempts").iterdir()
                   if (p / "scores").exists())


def test_shadow_needs_a_published_date(lake_root: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["shadow", "--date", str(START), "--policy", str(default_policy_path()),
                                   "--root", str(lake_root)])
    assert out.exit_code == 2
    assert "run `reputation run" in out.output
