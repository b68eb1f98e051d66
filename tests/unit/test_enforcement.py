"""Enforcement on small inline histories: decide() day after day, feeding back its own state."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from tests.unit.scoring_fixtures import DAY, TZ, complaints, registry, reviews, run_scores, sales, ts
from transforms.enforcement import (
    ACTION_KINDS,
    HOLD_COLLECTIVE,
    HOLD_EVIDENCE,
    HOLD_GUARD,
    Carried,
    EnforcementDecision,
    Evidence,
    Ladder,
    _composite,
    decide,
    enforcement_columns,
    evidence_signals,
    log_likelihood_ratio,
    step,
)
from transforms.errors import PolicyError
from transforms.lake import table_from_polars
from transforms.manipulation import discount_complaints
from transforms.policy import DIMENSIONS, RATE_DIMENSIONS, default_policy_path, load_policy
from transforms.schemas import ACTIONS_SCHEMA, ENFORCEMENT_STATE_SCHEMA, SCORES_SCHEMA

POLICY = load_policy()
E = POLICY.enforcement
LAD = Ladder.from_policy(POLICY)
PENALTY = {"warning", "restricted", "suspended"}


# ----------------------------------------------------------------------------- helpers
def _clean(ids: list[str], **reg: Any) -> pl.DataFrame:
    """Scored rows of clean merchants (50 orders a day for 30 days), with ``score_upper == score``.

    Setting each rate's Wilson lower bound to its shrunk rate makes the optimistic score
    equal the score, so a test can drive ``score`` directly.
    """
    rows = run_scores(registry(*[{"merchant_id": m} | reg for m in ids]), sales(dict.fromkeys(ids, 50)))
    return rows.with_columns([pl.col(f"{d}_rate_shrunk").alias(f"{d}_rate_ci_low") for d in RATE_DIMENSIONS]
                             + [pl.lit("r-test").alias("run_id")])


BASE = _clean([f"M{i:02d}" for i in range(40)])


def _day(k: int) -> date:
    return DAY + timedelta(days=k)


def _frame(scores: dict[str, float], base: pl.DataFrame = BASE, **cols: Any) -> pl.DataFrame:
    """Score rows for the merchants in ``scores`` with those scores (and column overrides)."""
    out = base.filter(pl.col("merchant_id").is_in(list(scores))).with_columns(
        pl.col("merchant_id").replace_strict(scores, return_dtype=pl.Float64).alias("score"))
    return out.with_columns([pl.lit(v).alias(k) for k, v in cols.items()]) if cols else out


def _run(frames: list[pl.DataFrame], state: pl.DataFrame | None = None, start: int = 0,
         recent: list[dict[str, Any]] | None = None) -> list[EnforcementDecision]:
    """decide() for consecutive days, feeding each day's state and summary into the next."""
    out = []
    recent = list(recent or [])
    for k, frame in enumerate(frames):
        day = _day(start + k)
        dec = decide(frame, state, recent, POLICY, day, "r-test")
        state = dec.state
        recent.append({"score_date": day.isoformat(), **dec.summary})
        out.append(dec)
    return out


def _tiers(decisions: list[EnforcementDecision], mid: str) -> list[str]:
    return [d.scores.filter(pl.col("merchant_id") == mid)["tier"][0] for d in decisions]


def _prev(mid: str, state: str, since: date, enforced: str | None = None, **kw: Any) -> pl.DataFrame:
    row = {"merchant_id": mid, "score_date": _day(-1), "state": state, "since": since,
           "policy_version": POLICY.version, "run_id": "r-prev", "enforced_tier": enforced or state,
           "evidence_tier": kw.pop("evidence_tier", enforced or state), "hard_rules": kw.pop("hard_rules", []),
           "improve_streak": kw.pop("improve_streak", 0)} | kw
    return pl.DataFrame([row], schema_overrides={"hard_rules": pl.List(pl.String), "improve_streak": pl.Int32})


def _actions(decisions: list[EnforcementDecision]) -> pl.DataFrame:
    return pl.concat([d.actions for d in decisions])


# ------------------------------------------------------------------------------ policy
def test_policy_states_the_days_to_penalty_and_validates_it(tmp_path: Path) -> None:
    assert E.penalty_from == "warning"
    assert E.max_days_to_penalty >= LAD.rank(E.penalty_from)
    raw = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    raw["enforcement"]["max_days_to_penalty"] = 1
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError, match="max_days_to_penalty"):
        load_policy(p)
    raw["enforcement"]["max_days_to_penalty"] = 2
    raw["enforcement"]["rate_rules"][0]["min_tier"] = "jail"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError, match="jail"):
        load_policy(p)


def test_outputs_match_their_schemas() -> None:
    decs = _run([_frame({"M00": 20.0, "M01": 90.0})] * 2)
    for d in decs:
        table_from_polars(d.scores, SCORES_SCHEMA)
        table_from_polars(d.state, ENFORCEMENT_STATE_SCHEMA)
        table_from_polars(d.actions, ACTIONS_SCHEMA)


# ---------------------------------------------------------------------- optimistic score
def test_optimistic_score_is_never_below_the_score_and_uses_the_lower_bound() -> None:
    rows = run_scores(registry({"merchant_id": "A"}, {"merchant_id": "B"}), sales({"A": 40, "B": 40}, days=10),
                      ret=None, com=complaints([{"merchant_id": "A", "opened_at": ts(d), "complainant_id": f"c{d}"}
                                                for d in range(12)]))
    out = enforcement_columns(rows, POLICY)
    assert (out["score_upper"] >= out["score"] - 1e-9).all()
    a = out.filter(pl.col("merchant_id") == "A")
    assert a["score_upper"][0] > a["score"][0]  # 12 defects of 400 orders: the lower bound is kinder
    assert a["quality_rate_ci_low"][0] < a["quality_rate"][0]


def test_composite_formula_matches_scoring() -> None:
    rows = run_scores(registry({"merchant_id": "A"}, {"merchant_id": "B", "category": "food",
                                                      "license_expires_on": date(2020, 1, 1)}),
                      sales({"A": 40, "B": 5}, days=20, late={"A": 6}))
    comp = rows.select(_composite({d: pl.col(f"{d}_score") for d in DIMENSIONS}, POLICY).alias("c"))["c"]
    assert comp.to_list() == pytest.approx(rows["score"].to_list(), abs=1e-6)


# --------------------------------------------------------------------------- the ladder
def test_escalation_moves_one_step_a_day_and_suspension_carries_notice() -> None:
    decs = _run([_frame({"M00": 10.0})] * 5)
    assert _tiers(decs, "M00") == ["watch", "warning", "restricted", "suspended", "suspended"]
    acts = _actions(decs)
    assert acts["action"].to_list() == ["escalate", "escalate", "escalate", "suspend"]
    assert acts["from_tier"].to_list() == [None, "watch", "warning", "restricted"]
    # Within max_days_to_penalty runs of the evidence pointing there, the merchant is in a penalty tier.
    assert _tiers(decs, "M00")[E.max_days_to_penalty - 1] in PENALTY
    suspend = acts.row(3, named=True)
    assert suspend["effective_on"] == _day(3) + timedelta(days=E.notice_days)
    assert suspend["notice_days"] == E.notice_days == 30
    assert all(a["effective_on"] == a["score_date"] for a in acts.head(3).iter_rows(named=True))


def test_penalty_needs_the_optimistic_score_below_the_threshold() -> None:
    # Every rate's point estimate is five times its category's (a low score), but on so little
    # evidence that each interval reaches zero: the optimistic score stays out of a penalty band.
    frame = _frame({"M00": 0.0}).with_columns(
        [(pl.col(f"{d}_category_rate") * 5).alias(f"{d}_rate_shrunk") for d in RATE_DIMENSIONS]
        + [pl.lit(0.0).alias(f"{d}_rate_ci_low") for d in RATE_DIMENSIONS])
    frame = frame.with_columns([(100.0 / (1 + (pl.col(f"{d}_rate_shrunk") / (2 * pl.col(f"{d}_category_rate")))
                                         ** 2)).alias(f"{d}_score") for d in RATE_DIMENSIONS])
    frame = frame.with_columns(_composite({d: pl.col(f"{d}_score") for d in DIMENSIONS}, POLICY).alias("score"))
    decs = _run([frame] * 5)
    s = decs[-1].scores.row(0, named=True)
    assert s["score"] < 45
    assert s["score_upper"] > 70
    assert set(_tiers(decs, "M00")) == {"good_standing"}


def test_hysteresis_and_minimum_days_before_stepping_down() -> None:
    since = _day(-3)
    state = _prev("M00", "warning", since)
    # 60 clears warning's upper threshold (58) but not by the 3-point margin: no step down, ever.
    decs = _run([_frame({"M00": 60.0})] * 30, state)
    assert set(_tiers(decs, "M00")) == {"warning"}
    # 62 clears it with margin: the step down comes once both the 7-run streak and 14 days in tier hold.
    decs = _run([_frame({"M00": 62.0})] * 30, state)
    tiers = _tiers(decs, "M00")
    first = tiers.index("watch")
    assert (_day(first) - since).days == E.min_days_in_tier
    assert first + 1 >= E.improvement_days
    assert set(tiers[first:]) == {"watch"}
    acts = _actions(decs)
    assert acts["action"].to_list() == ["de_escalate"]


def test_oscillating_score_does_not_flap() -> None:
    # Twenty days around the warning threshold (58), small and large swings, and around good standing (70).
    small = [57.0 if k % 2 else 59.0 for k in range(20)]
    large = [52.0 if k % 2 else 66.0 for k in range(20)]
    top = [68.5 if k % 3 else 71.5 for k in range(20)]
    frames = [_frame({"M00": small[k], "M01": large[k], "M02": top[k]}) for k in range(20)]
    decs = _run(frames)
    acts = _actions(decs)
    for mid in ("M00", "M01", "M02"):
        mine = acts.filter(pl.col("merchant_id") == mid)
        assert set(mine["action"]) <= {"escalate"}, mid  # never back and forth
        assert mine.height <= 2, mid
    assert _tiers(decs, "M00")[-1] == "warning"
    assert _tiers(decs, "M02")[-1] == "watch"


def test_insufficient_evidence_is_never_penalised_and_keeps_the_tier_in_force() -> None:
    thin = {"is_sufficient_evidence": False}
    decs = _run([_frame({"M00": 5.0}, **thin)] * 10)
    assert set(_tiers(decs, "M00")) == {"insufficient_evidence"}
    assert _actions(decs).height == 0
    assert set(decs[-1].scores["automation_hold"]) == {HOLD_EVIDENCE}
    assert set(decs[-1].state["enforced_tier"]) == {"good_standing"}
    # A merchant in a penalty tier whose evidence thins out keeps it, with one suspend_automation action.
    state = _prev("M00", "restricted", _day(-40))
    decs = _run([_frame({"M00": 90.0}, **thin)] * 5 + [_frame({"M00": 90.0})], state)
    acts = _actions(decs)
    assert acts["action"].to_list() == ["suspend_automation", "resume_automation"]
    assert acts["to_tier"].to_list() == ["insufficient_evidence", "restricted"]
    assert set(d.state["enforced_tier"][0] for d in decs) == {"restricted"}


def test_no_escalation_before_the_window_holds_enough_days_of_sales() -> None:
    decs = _run([_frame({"M00": 10.0}, sales_days_observed=E.min_observed_days - 1)] * 4)
    assert set(_tiers(decs, "M00")) == {"good_standing"}
    assert decs[-1].scores["automation_hold"][0] == HOLD_EVIDENCE
    decs = _run([_frame({"M00": 10.0}, sales_days_observed=E.min_observed_days)] * 2)
    assert _tiers(decs, "M00") == ["watch", "warning"]


def test_rerun_of_a_day_reproduces_the_same_actions() -> None:
    state = _prev("M00", "warning", _day(-30), improve_streak=6)
    frame = _frame({"M00": 80.0, "M01": 10.0})
    a = decide(frame, state, [], POLICY, DAY, "r1")
    b = decide(frame, state, [], POLICY, DAY, "r1")
    assert a.actions.height == 2
    assert a.actions.equals(b.actions)
    assert a.state.equals(b.state)


def test_inactive_registry_status_freezes_enforcement() -> None:
    decs = _run([_frame({"M00": 5.0}, status="closed")] * 3)
    assert set(_tiers(decs, "M00")) == {"good_standing"}
    assert _actions(decs).height == 0


# ------------------------------------------------------------------------------ hard rules
def test_expired_licence_in_a_regulated_category_jumps_to_restricted() -> None:
    base = _clean(["F1", "F2"], category="food", license_expires_on=date(2026, 1, 1))
    decs = _run([_frame({"F1": 90.0}, base=base)] * 2)
    assert _tiers(decs, "F1") == ["restricted", "restricted"]
    act = decs[0].actions.row(0, named=True)
    assert act["action"] == "escalate"
    assert act["reason_codes"][0] == "hard_rule:expired_licence_regulated"
    assert "hard rule expired_licence_regulated" in act["statement"]
    assert "hard_rule:expired_licence_regulated" in decs[0].scores["reason_codes"][0]
    # Thin evidence: no hard rule applies.
    decs = _run([_frame({"F1": 90.0}, base=base, is_sufficient_evidence=False)] * 2)
    assert set(_tiers(decs, "F1")) == {"insufficient_evidence"}


def _returns(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    base = {"status": "refunded", "resolved_at": None, "reason": "quality_defect"}
    full = [base | {"return_id": f"T{i}", "order_id": f"O{i}"} | r for i, r in enumerate(rows)]
    return pl.DataFrame(full, schema={"return_id": pl.String, "merchant_id": pl.String, "order_id": pl.String,
                                      "requested_at": pl.Datetime("us", "UTC"), "reason": pl.String,
                                      "status": pl.String, "resolved_at": pl.Datetime("us", "UTC")}).lazy()


def _scored(ids: list[str], orders: int = 50, rev: pl.LazyFrame | None = None, com: pl.LazyFrame | None = None,
            ret: pl.LazyFrame | None = None) -> pl.DataFrame:
    """Real scoring plus the enforcement signals, as the pipeline computes them."""
    reg = registry(*[{"merchant_id": m} for m in ids])
    sal = sales(dict.fromkeys(ids, orders))
    rows = run_scores(reg, sal, rev, com, ret)
    com = discount_complaints(com if com is not None else complaints([]), POLICY, TZ)
    sig = evidence_signals(com, ret if ret is not None else _returns([]), sal, rows, DAY, POLICY, TZ)
    return rows.join(sig, on="merchant_id", how="left")


PEERS = [f"P{i}" for i in range(6)]


def test_quality_rate_rule_needs_the_evidence_ratio_and_distinct_buyers() -> None:
    many = _returns([{"merchant_id": "Q", "requested_at": ts(k % 25)} for k in range(90)])
    rows = _scored(["Q", *PEERS], ret=many)
    decs = _run([rows] * 3)
    assert _tiers(decs, "Q")[0] == "warning"  # a hard rule jumps past watch
    assert decs[0].scores.filter(pl.col("merchant_id") == "Q")["hard_rules"].to_list() == [["quality_defect_rate"]]
    assert "hard_rule:quality_defect_rate" in decs[0].actions["reason_codes"][0]
    # The same defects from one order (one buyer) do not fire the rule.
    one = _returns([{"merchant_id": "Q", "requested_at": ts(k % 25), "order_id": "same"} for k in range(90)])
    cols = enforcement_columns(_scored(["Q", *PEERS], ret=one), POLICY).filter(pl.col("merchant_id") == "Q")
    assert cols["quality_affected_buyer_count"][0] == 1
    assert not cols["_rule_quality_defect_rate_fires"][0]


def test_a_fired_rate_rule_releases_only_below_its_release_ratio() -> None:
    ev = Evidence(sufficient=True, active=True, upper_rank=0, improved_rank=0,
                  rules_firing=(), rules_holding=("quality_defect_rate",))
    prev = Carried(state="warning", enforced_tier="warning", since=_day(-40), evidence_tier="warning",
                   hard_rules=("quality_defect_rate",), improve_streak=10)
    kept = step(prev, ev, LAD, DAY)
    assert kept.hard_rules == ("quality_defect_rate",)
    assert kept.action is None
    released = step(prev, Evidence(sufficient=True, active=True, upper_rank=0, improved_rank=0), LAD, DAY)
    assert released.action == "reinstate"


# ------------------------------------------------------------------------ manipulation
def test_review_bombing_does_not_push_a_good_merchant_into_a_penalty() -> None:
    organic = [{"merchant_id": m, "rating": 5, "created_at": ts(k % 28), "reviewer_id": f"u{m}{k}"}
               for m in ["G", *PEERS] for k in range(40)]
    bomb = [{"merchant_id": "G", "rating": 1, "created_at": ts(k % 3, hour=3), "verified_purchase": False,
             "reviewer_id": f"bot{k}", "text": "FAKE!!! not as described, scam" + ("!" * (k % 3))}
            for k in range(80)]
    rows = _scored(["G", *PEERS], rev=reviews(organic + bomb))
    g = rows.filter(pl.col("merchant_id") == "G")
    assert g["discounted_review_count"][0] >= 80
    decs = _run([rows] * 5)
    assert all(t not in PENALTY for t in _tiers(decs, "G"))
    assert decs[-1].scores.filter(pl.col("merchant_id") == "G")["evidence_tier"][0] not in PENALTY


def test_a_bad_merchant_buying_five_star_reviews_does_not_climb_out() -> None:
    defects = _returns([{"merchant_id": "B", "requested_at": ts(k % 28)} for k in range(110)])
    bought = [{"merchant_id": "B", "rating": 5, "created_at": ts(k % 2, hour=4), "verified_purchase": False,
               "reviewer_id": f"paid{k}", "text": "Best seller ever, great quality!"} for k in range(120)]
    rows = _scored(["B", *PEERS], ret=defects, rev=reviews(bought))
    state = _prev("B", "warning", _day(-60), hard_rules=["quality_defect_rate"])
    decs = _run([rows] * 20, state)
    assert set(_tiers(decs, "B")) <= PENALTY
    assert _actions(decs).filter(pl.col("merchant_id") == "B").filter(
        pl.col("action").is_in(["de_escalate", "reinstate"])).height == 0


def test_a_collective_complaint_surge_is_flagged_and_not_penalised() -> None:
    surge = complaints([{"merchant_id": "C", "opened_at": ts(k % 3), "complainant_id": f"angry{k}",
                         "category": "quality"} for k in range(30)])
    rows = _scored(["C", *PEERS], com=surge)
    cols = enforcement_columns(rows, POLICY).filter(pl.col("merchant_id") == "C")
    assert cols["is_collective_complaint"][0]
    # Surge complaints await people: they never count towards a hard rule.
    assert cols["quality_surge_complaint_count"][0] == 30
    assert cols["_rule_quality_defect_rate_bad"][0] == 0
    assert not cols["_rule_quality_defect_rate_fires"][0]
    # Even a score pointing to a penalty (here forced to 30) waits for people while the surge is reviewed.
    rows = rows.with_columns(pl.when(pl.col("merchant_id") == "C").then(30.0).otherwise(pl.col("score")).alias("score"))
    decs = _run([rows] * 4)
    assert set(_tiers(decs, "C")) == {"good_standing"}
    c = decs[0].scores.filter(pl.col("merchant_id") == "C").row(0, named=True)
    assert c["automation_hold"] == HOLD_COLLECTIVE
    assert c["is_collective_complaint"]
    assert HOLD_COLLECTIVE in c["reason_codes"]
    assert decs[0].summary["collective_complaint_merchants"] == ["C"]
    # The hold outlasts the surge's recent window: a later run with the surge no longer recent stays held.
    later = rows.with_columns(pl.lit(False).alias("is_collective_complaint"),
                              pl.lit(0, pl.Int64).alias("complaint_recent_count"))
    after = _run([later] * 3, decs[-1].state, start=10)
    assert set(_tiers(after, "C")) == {"good_standing"}


def test_a_collective_complaint_review_does_not_shield_complaint_free_evidence() -> None:
    prev = Carried(state="good_standing", enforced_tier="good_standing", since=_day(-40),
                   evidence_tier="good_standing", collective_hold_until=_day(100))
    held = step(prev, Evidence(sufficient=True, active=True, upper_rank=3, improved_rank=3,
                               rules_firing=("quality_defect_rate",), rules_holding=("quality_defect_rate",)),
                LAD, DAY)
    assert held.action is None
    assert held.hold == HOLD_COLLECTIVE
    late = step(prev, Evidence(sufficient=True, active=True, upper_rank=0, improved_rank=0,
                               rules_firing=("fulfilment_failure_rate",),
                               rules_holding=("fulfilment_failure_rate",)), LAD, DAY)
    assert late.action == "escalate"
    assert late.to_tier == "warning"


def test_rate_rule_evidence_ratio_is_wald_log_likelihood_ratio() -> None:
    frame = pl.DataFrame({"x": [14, 3, 0], "n": [100, 100, 100], "b": [0.02, 0.02, 0.02]})
    got = frame.select(log_likelihood_ratio(pl.col("x"), pl.col("n"), pl.col("b"), 4.0, 1.5)).to_series().to_list()
    for (x, n, b), llr in zip(frame.rows(), got, strict=True):
        p0, p1 = 1.5 * b, 4 * b
        assert llr == pytest.approx(x * math.log(p1 / p0) + (n - x) * math.log((1 - p1) / (1 - p0)))
    assert got[0] > math.log(E.hard_rule_evidence_ratio) > got[1]
    assert got[2] < 0


def test_rate_rule_evidence_drifts_down_inside_the_normal_spread_however_large_the_merchant() -> None:
    # A large honest merchant at 1.4x its category (inside the null of 1.5x) only gets further
    # from the bar as its volume grows; a merchant at 4x crosses it with a few dozen orders' worth.
    n = pl.Series("n", [1_000, 10_000, 100_000, 200, 400])
    x = pl.Series("x", [14, 140, 1_400, 16, 32])  # 1.4 % at b = 1 %, then 8 % (4x at b = 2 %)
    b = pl.Series("b", [0.01, 0.01, 0.01, 0.02, 0.02])
    got = pl.DataFrame([x, n, b]).select(
        log_likelihood_ratio(pl.col("x"), pl.col("n"), pl.col("b"), 4.0, 1.5)).to_series().to_list()
    assert got[0] > got[1] > got[2]
    assert got[2] < -100
    assert got[3] < math.log(E.hard_rule_evidence_ratio) < got[4]


# --------------------------------------------------------------------- blast radius
def test_blast_radius_guard_holds_and_freezes_the_cohort() -> None:
    ids = [f"M{i:02d}" for i in range(38)]
    calm = _frame(dict.fromkeys(ids, 90.0))
    bad = [f"M{i:02d}" for i in range(12)]  # 30 % of merchants fall into the warning band at once
    fault = _frame({m: (50.0 if m in bad else 90.0) for m in ids} | {"M30": 65.0, "M31": 86.0})
    decs = _run([calm, calm, fault])
    held = decs[-1]
    assert held.held
    assert held.summary["guard"]["count"] == 12
    assert "exceed" in held.summary["hold_reason"]
    assert held.summary["new_penalties"] == 0
    assert set(held.actions["merchant_id"]) == {*bad, "M30"}  # every action of the day is held
    # The cohort: everyone whose evidence got worse today (M30 to watch, M31 by 4 points), frozen
    # with yesterday's reference; nobody's tier moved.
    st = held.state.filter(pl.col("merchant_id").is_in([*bad, "M30", "M31"]))
    assert set(st["enforced_tier"]) == {"good_standing"}
    assert set(st["guard_hold_since"]) == {_day(2)}
    assert set(st["evidence_tier"]) == {"good_standing"}
    assert held.state.filter(pl.col("merchant_id") == "M32")["guard_hold_since"][0] is None
    assert held.summary["guard_cohort"] == 14
    assert held.released_state is not None
    assert set(held.released_state.filter(pl.col("merchant_id").is_in(bad))["enforced_tier"]) == {"watch"}
    assert set(held.scores.filter(pl.col("merchant_id").is_in(bad))["proposed_tier"]) == {"watch"}
    # The fault persists: the cohort does not escalate, a newcomer's action goes out, nothing is held.
    nxt_frame = pl.concat([fault, _frame({"M38": 65.0})])
    recent = [{"score_date": _day(k).isoformat(), **d.summary} for k, d in enumerate(decs)]
    nxt = _run([nxt_frame] * (E.blast_radius.freeze_days + 1), held.state, start=3, recent=recent)
    assert not nxt[0].held
    assert set(nxt[0].actions["merchant_id"]) == {"M38"}
    assert set(nxt[0].scores.filter(pl.col("merchant_id").is_in([*bad, "M30"]))["automation_hold"]) == {HOLD_GUARD}
    assert all(set(d.state.filter(pl.col("merchant_id").is_in(bad))["enforced_tier"]) == {"good_standing"}
               for d in nxt[:-1])
    # After freeze_days the guard counts the cohort again against its pinned reference: held again.
    again = E.blast_radius.freeze_days - 1  # index of the first run freeze_days after the hold
    assert [d.held for d in nxt[:again]] == [False] * again
    assert nxt[again].held
    assert nxt[again].summary["guard"]["count"] == 12


def test_blast_radius_guard_ignores_cold_start_and_small_counts() -> None:
    ids = [f"M{i:02d}" for i in range(40)]
    # First run ever: no reference, nobody is "newly heading" anywhere.
    decs = _run([_frame({m: 20.0 for m in ids})] * 3)
    assert not any(d.held for d in decs)
    # A handful (at most min_count) newly heading into a penalty is normal.
    calm = _frame(dict.fromkeys(ids, 90.0))
    few = _frame({m: (50.0 if m in ids[:E.blast_radius.min_count] else 90.0) for m in ids})
    assert not _run([calm, few])[-1].held


# ----------------------------------------------------------------------- statements
def _statement_cases() -> dict[str, EnforcementDecision]:
    cases = {
        "escalate": decide(_frame({"M00": 60.0}), None, [], POLICY, DAY, "r1"),
        "suspend": decide(_frame({"M00": 10.0}), _prev("M00", "restricted", _day(-5)), [], POLICY, DAY, "r1"),
        "de_escalate": decide(_frame({"M00": 68.0}), _prev("M00", "warning", _day(-30), improve_streak=6), [],
                              POLICY, DAY, "r1"),
        "reinstate": decide(_frame({"M00": 85.0}), _prev("M00", "watch", _day(-30), improve_streak=6), [],
                            POLICY, DAY, "r1"),
        "suspend_automation": decide(_frame({"M00": 85.0}, is_sufficient_evidence=False),
                                     _prev("M00", "warning", _day(-30)), [], POLICY, DAY, "r1"),
        "resume_automation": decide(_frame({"M00": 50.0}), _prev("M00", "insufficient_evidence", _day(-30),
                                                                 enforced="warning"), [], POLICY, DAY, "r1"),
    }
    return cases


@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_statement_of_reasons_for_each_action_kind(kind: str) -> None:
    dec = _statement_cases()[kind]
    assert dec.actions.height == 1
    a = dec.actions.row(0, named=True)
    assert a["action"] == kind
    text = a["statement"]
    appeal_until = DAY + timedelta(days=E.appeal_days)
    assert a["appeal_until"] == appeal_until
    assert (appeal_until - DAY).days >= 183
    assert POLICY.version in text
    assert "automated means" in text
    assert f"appeal this decision until {appeal_until.isoformat()}" in text
    assert "r1/M00" in text
    assert a["is_automated"]
    assert DAY.isoformat() in text
    row = dec.scores.row(0, named=True)
    assert f"{row['orders_count']} orders" in text  # the facts, with their numbers
    if kind not in ("suspend_automation",):
        assert f"from {row['window_start']} to {DAY.isoformat()}" in text
        assert f"{row['score_upper']:.1f}" in text
    if kind == "suspend":
        assert f"after {E.notice_days} days' notice" in text
        assert (DAY + timedelta(days=E.notice_days)).isoformat() in text
        assert a["effective_on"] == DAY + timedelta(days=E.notice_days)
    else:
        assert a["effective_on"] == DAY
    if kind in ("escalate", "suspend"):
        assert "below" in text
        assert "threshold" in text
        assert f"score_below_threshold:{a['to_tier']}" in a["reason_codes"]
    if kind in ("de_escalate", "reinstate"):
        assert f"{E.hysteresis_points:g}-point margin" in text
        assert a["reason_codes"][0] == "score_recovered"
    if kind == "suspend_automation":
        assert "not enough evidence" in text
        assert "tier in force, warning, is kept" in text
    if kind == "resume_automation":
        assert "automated enforcement applies to you" in text


# ------------------------------------------------------------------------------- docs
DOC = Path(__file__).resolve().parents[2] / "docs" / "enforcement.md"


def _doc_table(marker: str) -> list[list[str]]:
    block = DOC.read_text(encoding="utf-8").split(marker, 1)[1]
    rows: list[list[str]] = []
    for raw_line in block.splitlines()[1:]:
        line = raw_line.strip()
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if set(cells[0]) <= {"-"} or cells[0] in ("tier", "rule", "policy key"):
            continue
        rows.append(cells)
    return rows


def test_documented_enforcement_values_are_the_policys_and_cover_every_number() -> None:
    raw = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    documented = {r[0]: r[1] for r in _doc_table("<!-- enforcement-values:")}
    numeric: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            numeric[prefix] = node

    walk("enforcement", raw["enforcement"])
    assert documented.keys() == numeric.keys()
    for k, v in numeric.items():
        assert float(documented[k]) == pytest.approx(float(v)), k


def test_documented_tiers_and_rules_are_the_policys() -> None:
    assert {r[0]: r[1] for r in _doc_table("<!-- tiers:")} == {t.name: f"{t.min_score:g}" for t in POLICY.tiers}
    rules = {r[0]: r for r in _doc_table("<!-- rate rules:")}
    assert rules.keys() == {r.name for r in E.rate_rules}
    for r in E.rate_rules:
        row = rules[r.name]
        assert (row[1], float(row[3]), float(row[4]), float(row[5]), int(row[6]), row[7]) == (
            r.dimension, r.null_multiple, r.alternative_multiple, r.min_rate, r.min_affected_buyers, r.min_tier)
    text = DOC.read_text(encoding="utf-8")
    assert f"`enforcement.penalty_from` (`{E.penalty_from}`)" in text
    for lr in E.licence_rules:
        assert f"hard_rule:{lr.name}" in text
