"""decide() against a plain row-by-row reading of the same rules, on small inline frames.

decide() reads its inputs column by column for speed; these tests rebuild each merchant's
evidence, carried state and reasons one row at a time, as the rules read, and require the
same answer.
"""

from __future__ import annotations

import gc
from datetime import date, timedelta
from typing import Any

import polars as pl
import pytest

from tests.unit.scoring_fixtures import DAY, registry, run_scores, sales
from transforms.enforcement import (
    HOLD_COLLECTIVE,
    HOLD_GUARD,
    Carried,
    EnforcementDecision,
    Evidence,
    Ladder,
    Step,
    _carried_from_state,
    _names_where,
    action_reason_codes,
    decide,
    enforcement_columns,
    statement,
    step,
)
from transforms.policy import RATE_DIMENSIONS, load_policy

POLICY = load_policy()
E = POLICY.enforcement
LAD = Ladder.from_policy(POLICY)
IDS = [f"M{i:02d}" for i in range(30)]
FOOD = ["F0", "F1"]


def _base() -> pl.DataFrame:
    """Scored rows whose optimistic score equals ``score`` (so a test can set it directly)."""
    reg = registry(*[{"merchant_id": m} for m in IDS],
                   *[{"merchant_id": m, "category": "food", "license_expires_on": date(2026, 1, 1)} for m in FOOD])
    rows = run_scores(reg, sales(dict.fromkeys([*IDS, *FOOD], 50)))
    return rows.with_columns([pl.col(f"{d}_rate_shrunk").alias(f"{d}_rate_ci_low") for d in RATE_DIMENSIONS])


BASE = _base()


def _frame(scores: dict[str, float], **overrides: dict[str, Any]) -> pl.DataFrame:
    """BASE with the given scores and per-merchant column overrides ``{column: {merchant: value}}``."""
    out = BASE.with_columns(pl.col("merchant_id").replace_strict(scores, default=90.0, return_dtype=pl.Float64)
                            .alias("score"))
    for col, values in overrides.items():
        out = out.with_columns(pl.when(pl.col("merchant_id").is_in(list(values)))
                               .then(pl.col("merchant_id").replace_strict(values, default=None,
                                                                          return_dtype=out.schema[col]))
                               .otherwise(pl.col(col)).alias(col))
    return out


# ------------------------------------------------------------------ row-by-row reference
def _reference_carried(previous_state: pl.DataFrame | None) -> dict[str, Carried]:
    """The carried state read one row (one dict) at a time."""
    out: dict[str, Carried] = {}
    for row in ([] if previous_state is None else previous_state.to_dicts()):
        state = row["state"]
        enforced = row.get("enforced_tier")
        if enforced not in LAD.names:
            enforced = state if state in LAD.names else LAD.names[0]
        if state not in LAD.names and state != LAD.insufficient:
            state = enforced
        ev_tier = row.get("evidence_tier")
        out[row["merchant_id"]] = Carried(
            state=state, enforced_tier=enforced, since=row["since"],
            last_escalated_on=row.get("last_escalated_on"), effective_on=row.get("effective_on"),
            evidence_tier=ev_tier if ev_tier in LAD.names else None, score_upper=row.get("score_upper"),
            hard_rules=tuple(row.get("hard_rules") or ()), improve_streak=int(row.get("improve_streak") or 0),
            collective_hold_until=row.get("collective_hold_until"), guard_hold_since=row.get("guard_hold_since"))
    return out


def _reference_steps(scores: pl.DataFrame, previous_state: pl.DataFrame | None,
                     day: date) -> tuple[list[dict[str, Any]], list[Step]]:
    """Each merchant's evidence built from its named row, and its step."""
    rate = [r.name for r in E.rate_rules]
    licence = [r.name for r in E.licence_rules]
    prev = _reference_carried(previous_state)
    rows = enforcement_columns(scores, POLICY).sort("merchant_id").to_dicts()
    steps = []
    for row in rows:
        ev = Evidence(
            sufficient=bool(row["is_sufficient_evidence"]), active=row["status"] == "active",
            upper_rank=int(row["_upper_rank"]), improved_rank=int(row["_improved_rank"]),
            rules_firing=tuple(n for n in rate if row[f"_rule_{n}_fires"]),
            rules_holding=tuple(n for n in rate if row[f"_rule_{n}_holds"]),
            licence_rules=tuple(n for n in licence if row[f"_rule_{n}_fires"]),
            collective=bool(row["is_collective_complaint"]), score_upper=float(row["score_upper"]),
            observed=int(row["sales_days_observed"]) >= E.min_observed_days)
        steps.append(step(prev.get(row["merchant_id"]), ev, LAD, day))
    return rows, steps


def _assert_matches_reference(dec: EnforcementDecision, scores: pl.DataFrame,
                              previous_state: pl.DataFrame | None, day: date) -> list[Step]:
    rows, steps = _reference_steps(scores, previous_state, day)
    out = dec.scores.to_dicts()
    assert [r["merchant_id"] for r in out] == [r["merchant_id"] for r in rows]
    for got, row, s in zip(out, rows, steps, strict=True):
        assert got["proposed_tier"] == s.carried.state
        assert got["evidence_tier"] == (None if s.evidence_rank is None else LAD.names[s.evidence_rank])
        assert got["hard_rules"] == list(s.hard_rules)
        assert got["automation_hold"] == s.hold
        prefix = [f"hard_rule:{n}" for n in s.hard_rules]
        if row["is_collective_complaint"] or s.hold == HOLD_COLLECTIVE:
            prefix.append(HOLD_COLLECTIVE)
        if s.hold == HOLD_GUARD:
            prefix.append(HOLD_GUARD)
        assert got["reason_codes"] == prefix + row["reason_codes"]
        assert got["reason_points"] == [0.0] * len(prefix) + row["reason_points"]
        assert len(got["reason_details"]) == len(prefix) + len(row["reason_details"])
    released = dec.released_state if dec.held else dec.state
    assert released is not None
    for got, s in zip(released.to_dicts(), steps, strict=True):
        c = s.carried
        assert (got["state"], got["enforced_tier"], got["since"], got["evidence_tier"], got["score_upper"],
                tuple(got["hard_rules"]), got["improve_streak"], got["collective_hold_until"],
                got["guard_hold_since"], got["effective_on"], got["last_escalated_on"]) == (
            c.state, c.enforced_tier, c.since, c.evidence_tier, c.score_upper, c.hard_rules, c.improve_streak,
            c.collective_hold_until, c.guard_hold_since, c.effective_on, c.last_escalated_on)
    acted = [(row, s) for row, s in zip(rows, steps, strict=True) if s.action is not None]
    assert dec.actions["merchant_id"].to_list() == [row["merchant_id"] for row, _ in acted]
    assert dec.actions["reason_codes"].to_list() == [action_reason_codes(s, row) for row, s in acted]
    assert dec.actions["statement"].to_list() == [statement(s, row, POLICY, day, "r") for row, s in acted]
    assert dec.summary["proposed_new_penalties"] == sum(
        1 for s in steps if s.action in ("escalate", "suspend") and s.to_tier in ("warning", "restricted", "suspended")
        and s.from_tier not in ("warning", "restricted", "suspended"))
    return steps


# ------------------------------------------------------------------------------ tests
def _hard_rules_of(dec: EnforcementDecision, mid: str) -> list[str]:
    return dec.scores.filter(pl.col("merchant_id") == mid)["hard_rules"].to_list()[0]


def test_decide_matches_the_row_by_row_reference_over_held_and_frozen_days() -> None:
    collective = {"M06": 2, "F0": 1}
    # 20 quality defects in 1,500 orders fire the quality rule; 12 only hold it (below its threshold).
    fires = {"quality_defect_count": {"M07": 20}, "defect_return_count": {"M07": 20}}
    holds = {"quality_defect_count": {"M07": 12, "M08": 12}, "defect_return_count": {"M07": 12, "M08": 12}}
    day0 = _frame({"M00": 20.0, "M01": 60.0, "M02": 75.0, "M03": 10.0, "M05": 5.0, "M06": 30.0},
                  is_sufficient_evidence={"M03": False, "M04": False}, status={"M05": "closed"},
                  surge_complaint_count=collective, **fires)
    d0 = decide(day0, None, [], POLICY, DAY, "r")
    s0 = _assert_matches_reference(d0, day0, None, DAY)
    assert not d0.held
    assert any(s.hold == HOLD_COLLECTIVE for s in s0)
    f0 = d0.scores.filter(pl.col("merchant_id") == "F0").row(0, named=True)
    assert f0["reason_codes"][:2] == ["hard_rule:expired_licence_regulated", HOLD_COLLECTIVE]
    assert _hard_rules_of(d0, "M07") == ["quality_defect_rate"]

    # Day 1: many merchants at once head for a penalty: the guard holds the day.
    worse = {m: 50.0 for m in IDS[10:24]} | {"M00": 20.0, "M03": 60.0, "M04": 80.0}
    day1 = _frame(worse, surge_complaint_count=collective, **holds)
    d1 = decide(day1, d0.state, [], POLICY, DAY + timedelta(days=1), "r")
    assert d1.held
    _assert_matches_reference(d1, day1, d0.state, DAY + timedelta(days=1))
    assert _hard_rules_of(d1, "M07") == ["quality_defect_rate"]  # in force, still held by the evidence
    assert _hard_rules_of(d1, "M08") == []

    # Day 2: the cohort is frozen by the guard.
    day2 = _frame(worse | {"M10": 30.0}, **holds)
    d2 = decide(day2, d1.state, [], POLICY, DAY + timedelta(days=2), "r")
    s2 = _assert_matches_reference(d2, day2, d1.state, DAY + timedelta(days=2))
    assert any(s.hold == HOLD_GUARD for s in s2)


def test_carried_state_reads_like_one_row_at_a_time() -> None:
    day = DAY
    state = pl.DataFrame({
        "merchant_id": ["A", "B", "C", "D", "E", "F", "A"],
        "state": ["watch", "retired_tier", "warning", "retired_tier", "insufficient_evidence", "watch", "warning"],
        "since": [day - timedelta(days=k) for k in range(7)],
        "enforced_tier": ["watch", "warning", "retired_tier", None, "restricted", "watch", "warning"],
        "evidence_tier": ["watch", None, "retired_tier", "warning", None, "good_standing", "warning"],
        "score_upper": [70.0, None, 40.0, 10.0, 55.5, 88.0, 41.0],
        "hard_rules": [["quality_defect_rate"], None, [], ["a", "b"], [], None, []],
        "improve_streak": [2, None, 0, 1, 0, 3, 0],
        "guard_hold_since": [None, day, None, None, None, None, day],
    }, schema_overrides={"hard_rules": pl.List(pl.String), "improve_streak": pl.Int32})
    got = _carried_from_state(state, LAD)
    assert got == _reference_carried(state)
    assert got["A"].state == "warning"  # the last row of a merchant wins
    # A tier the ladder no longer has falls back to the tier in force, else to good standing.
    assert got["B"].state == "warning"
    assert got["D"].enforced_tier == "good_standing"
    # An older state without the optional columns.
    bare = state.select("merchant_id", "state", "since")
    assert _carried_from_state(bare, LAD) == _reference_carried(bare)
    assert _carried_from_state(state.head(0), LAD) == {}
    assert _carried_from_state(None, LAD) == {}


def test_names_where_lists_the_set_flags_of_each_row() -> None:
    flags = [[True, False, None, True], [False, False, True, True]]
    assert _names_where(["a", "b"], flags, 4) == [("a",), (), ("b",), ("a", "b")]
    assert _names_where([], [], 3) == [(), (), ()]


@pytest.mark.parametrize("enabled", [True, False])
def test_decide_leaves_the_garbage_collector_as_it_found_it(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        decide(_frame({}), None, [], POLICY, DAY, "r")
        assert gc.isenabled() is enabled
        with pytest.raises(pl.exceptions.ColumnNotFoundError):
            decide(_frame({}).drop("status"), None, [], POLICY, DAY, "r")
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
