"""``reputation explain``: one merchant's score, its evidence, reasons and counterfactuals.

The counterfactual answers the two questions a merchant asks: *what would have to
change* to reach the next better tier (per dimension, the rate that would do it on
its own), and *when does old evidence roll off* the window.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import polars as pl

from transforms.errors import NotFound
from transforms.lake import Lake
from transforms.policy import RATE_DIMENSIONS, Policy, load_policy
from transforms.scoring import REASON_CODES, SUBSCORE_FLOOR
from transforms.settings import Settings

LABELS = {
    "quality": "Product quality (defect returns and quality/counterfeit complaints per order)",
    "description": "Description accuracy (not-as-described returns, complaints and mismatch reviews per order)",
    "after_sales": "After-sales service (complaints and returns handled late, unresolved, escalated or rejected)",
    "fulfilment": "Fulfilment (late shipments and seller cancellations per order)",
    "satisfaction": "Customer satisfaction (Bayesian average rating, verified purchases weigh more)",
    "compliance": "Compliance (licence, registry status)",
}


def required_rate(target_subscore: float, category_rate: float, multiple: float, steepness: float) -> float:
    """Invert the rate sub-score: the rate at which a dimension scores ``target_subscore``."""
    if target_subscore >= 100:
        return 0.0
    return float(category_rate * multiple * ((100.0 / target_subscore) - 1.0) ** (1.0 / steepness))


def explain_row(row: dict[str, Any], policy: Policy, day: date,
                state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the explanation of one published score row (pure; used by the CLI and tests).

    ``state`` is the merchant's enforcement state row of the same date, when published:
    it tells how long the merchant has been in its tier for the path out of it.
    """
    weights = policy.dimensions.weights()
    dims: dict[str, Any] = {}
    for d in RATE_DIMENSIONS:
        dims[d] = {
            "label": LABELS[d], "weight": round(weights[d], 4), "score": row[f"{d}_score"],
            "rate": row[f"{d}_rate"], "rate_shrunk": row[f"{d}_rate_shrunk"],
            "interval": [row[f"{d}_rate_ci_low"], row[f"{d}_rate_ci_high"]],
            "interval_level": policy.evidence.confidence_level,
            "events": row[{"quality": "quality_defect_count", "description": "description_mismatch_count",
                           "after_sales": "after_sales_failure_count",
                           "fulfilment": "fulfilment_failure_count"}[d]],
            "exposure": row[f"{d}_exposure_count"], "category_rate": row[f"{d}_category_rate"],
            "category_percentile": row[f"{d}_category_percentile"],
        }
    dims["after_sales"]["first_response_hours_median"] = row["first_response_hours_median"]
    dims["after_sales"]["first_response_hours_p90"] = row["first_response_hours_p90"]
    dims["after_sales"]["unresolved_past_deadline_count"] = row["unresolved_past_deadline_count"]
    dims["after_sales"]["escalated_complaint_count"] = row["escalated_complaint_count"]
    dims["satisfaction"] = {"label": LABELS["satisfaction"], "weight": round(weights["satisfaction"], 4),
                            "score": row["satisfaction_score"], "rating_bayes_mean": row["rating_bayes_mean"],
                            "rating_mean_raw": row["rating_mean_raw"], "review_count": row["review_count"],
                            "verified_review_count": row["verified_review_count"],
                            "discounted_review_count": row["discounted_review_count"],
                            "discount_reasons": row["discount_reasons"],
                            "category_rating_mean": row["category_rating_mean"]}
    dims["compliance"] = {"label": LABELS["compliance"], "weight": round(weights["compliance"], 4),
                          "score": row["compliance_score"], "licence_state": row["licence_state"],
                          "status": row["status"], "tenure_days": row["tenure_days"],
                          "is_regulated_category": row["is_regulated_category"]}
    return {
        "merchant_id": row["merchant_id"], "score_date": day.isoformat(), "score": row["score"],
        "tier": row["tier"], "raw_tier": row["raw_tier"], "category": row["category"],
        "policy_version": row["policy_version"], "run_id": row["run_id"],
        "is_sufficient_evidence": row["is_sufficient_evidence"], "evidence_confidence": row["evidence_confidence"],
        "window": {"days": row["window_days"], "start": str(row["window_start"]), "end": day.isoformat()},
        "orders_count": row["orders_count"],
        "dimensions": dims,
        "reasons": [{"code": c, "detail": t, "points_lost": p} for c, t, p in
                    zip(row["reason_codes"], row["reason_details"], row["reason_points"], strict=True)],
        "counterfactual": counterfactual(row, policy, day),
        "enforcement": enforcement_path(row, state, policy),
    }


def enforcement_path(row: dict[str, Any], state: dict[str, Any] | None, policy: Policy) -> dict[str, Any]:
    """What it takes to leave the enforced tier (which may differ from the score's band).

    Stepping down the ladder needs the *optimistic* score ``score_upper`` above the better
    tier's threshold plus the hysteresis margin on ``improvement_days`` consecutive runs,
    after ``min_days_in_tier`` days in the tier, and every hard rule in force released
    (see docs/enforcement.md).
    """
    e = policy.enforcement
    names = [t.name for t in policy.tiers]
    enforced = row.get("enforced_tier") or row.get("tier")
    out: dict[str, Any] = {"enforced_tier": enforced, "evidence_tier": row.get("evidence_tier"),
                           "hard_rules": list(row.get("hard_rules") or []),
                           "automation_hold": row.get("automation_hold"), "score_upper": row.get("score_upper")}
    if enforced not in names or names.index(enforced) == 0:
        out.update(next_tier=None, message=f"{enforced}: nothing to leave" if enforced in names else
                   f"{enforced}: no automated enforcement until the evidence is sufficient")
        return out
    target = policy.tiers[names.index(enforced) - 1]
    bar = target.min_score + e.hysteresis_points
    since = state.get("since") if state else None
    streak = int(state.get("improve_streak") or 0) if state else 0
    earliest = None
    upper = row.get("score_upper")
    needs = [f"the optimistic score (now {upper:.1f}) at or above {bar:g} ({target.name}'s {target.min_score:g} "
             f"+ {e.hysteresis_points:g} margin) on {e.improvement_days} consecutive daily runs (so far {streak})"
             if upper is not None else f"the optimistic score at or above {bar:g}"]
    if isinstance(since, date):
        earliest = since + timedelta(days=e.min_days_in_tier)
        needs.append(f"not before {earliest.isoformat()} ({e.min_days_in_tier} days in {enforced}, since "
                     f"{since.isoformat()})")
    if out["hard_rules"]:
        needs.append("the hard rule(s) " + ", ".join(out["hard_rules"]) + " released (a rate rule's evidence ratio "
                     f"below {e.hard_rule_evidence_ratio:g} ** {e.hard_rule_release_ratio:g}; a licence put right)")
    out.update(next_tier=target.name, optimistic_score_needed=bar, improve_streak=streak,
               earliest_step_down=earliest.isoformat() if earliest else None, needs=needs,
               message=f"to step down from {enforced} to {target.name}: " + "; ".join(needs))
    return out


def counterfactual(row: dict[str, Any], policy: Policy, day: date) -> dict[str, Any]:
    """What would move the merchant to the next better tier, and when evidence rolls off."""
    weights = policy.dimensions.weights()
    tiers = policy.tiers
    score = float(row["score"])
    better = [t for t in tiers if t.min_score > score]
    window_start = row["window_start"] if isinstance(row["window_start"], date) else \
        date.fromisoformat(str(row["window_start"]))
    rolloff = {
        "window_days": row["window_days"],
        "oldest_evidence_day": window_start.isoformat(),
        # The window ends on the score date and slides one day per run: its oldest day is gone tomorrow.
        "oldest_evidence_leaves_on": (day + timedelta(days=1)).isoformat(),
        "all_current_evidence_gone_by": (day + timedelta(days=int(row["window_days"]))).isoformat(),
        "half_life_days": policy.window.half_life_days,
    }
    if not better:
        return {"next_tier": None, "message": "already in the best tier", "rolloff": rolloff, "options": []}
    target = better[-1]
    gap = target.min_score - score
    options = []
    for d in (*RATE_DIMENSIONS, "satisfaction"):
        sub = float(row[f"{d}_score"])
        # The composite is a weighted geometric mean: raising one sub-score s to s' multiplies the
        # score by (s' / s) ** weight, so reaching the target alone needs s' = s * (target / score) ** (1 / weight).
        need = (max(sub, SUBSCORE_FLOOR) * (target.min_score / max(score, SUBSCORE_FLOOR)) ** (1.0 / weights[d])
                if weights[d] > 0 else float("inf"))
        if need > 100:
            continue
        opt: dict[str, Any] = {"dimension": d, "current_subscore": round(sub, 2), "needed_subscore": round(need, 2)}
        if d in RATE_DIMENSIONS:
            cfg = getattr(policy.dimensions, d)
            opt["current_rate"] = row[f"{d}_rate_shrunk"]
            opt["needed_rate"] = required_rate(need, row[f"{d}_category_rate"], cfg.benchmark_multiple,
                                               cfg.steepness)
        else:
            opt["current_rating"] = row["rating_bayes_mean"]
            opt["needed_rating"] = 1 + 4 * need / 100
        options.append(opt)
    return {"next_tier": target.name, "points_needed": round(gap, 2), "rolloff": rolloff, "options": options,
            "message": (f"{gap:.1f} more points reach {target.name}; any one of the options below would do it "
                        "on its own" if options else
                        f"{gap:.1f} more points reach {target.name}; no single dimension can close the gap alone")}


def explain_merchant(settings: Settings, merchant_id: str, day: date) -> dict[str, Any]:
    """Load a merchant's published row for ``day`` and explain it.

    Raises
    ------
    NotFound
        When the date has no published scores or the merchant has no row.
    """
    lake = Lake(settings.root)
    files = lake.parquet_files(f"scores/score_date={day.isoformat()}")
    if not files:
        raise NotFound(f"no published scores for {day}", hint=f"run `reputation run --date {day}` first")
    rows = pl.read_parquet(files).filter(pl.col("merchant_id") == merchant_id)
    if rows.height == 0:
        raise NotFound(f"merchant {merchant_id} has no score on {day}",
                       hint="check the id; only merchants in the registry as of the date are scored")
    state_files = lake.parquet_files(f"state/enforcement/score_date={day.isoformat()}")
    state_rows = (pl.read_parquet(state_files).filter(pl.col("merchant_id") == merchant_id)
                  if state_files else None)
    state = state_rows.row(0, named=True) if state_rows is not None and state_rows.height else None
    return explain_row(rows.row(0, named=True), load_policy(settings.policy_path), day, state)


def _fmt_rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.2f}%"


def render_text(data: dict[str, Any], console: Any) -> None:
    """Print an explanation for people."""
    c = console
    c.print(f"[bold]{data['merchant_id']}[/] ({data['category']}) on {data['score_date']}: "
            f"score [bold]{data['score']:.1f}[/]/100, tier [bold]{data['tier']}[/] "
            f"(policy {data['policy_version']}, run {data['run_id']})", highlight=False)
    w = data["window"]
    c.print(f"window: {w['start']} .. {w['end']} ({w['days']} days), {data['orders_count']} orders, "
            f"evidence confidence {data['evidence_confidence']:.2f}"
            + ("" if data["is_sufficient_evidence"] else "  [yellow]insufficient evidence: no automated penalty[/]"),
            highlight=False)
    for name, d in data["dimensions"].items():
        line = f"  {name:<12} {d['score']:6.1f}  (weight {d['weight']:.2f})  "
        if "interval" in d:
            lo, hi = d["interval"]
            line += (f"{d['events']}/{d['exposure']} = {_fmt_rate(d['rate'])}, adjusted {_fmt_rate(d['rate_shrunk'])}"
                     f", {int(d['interval_level'] * 100)}% interval {_fmt_rate(lo)}–{_fmt_rate(hi)}, category "
                     f"{_fmt_rate(d['category_rate'])}, better than {d['category_percentile']:.0f}% of peers")
        elif name == "satisfaction":
            line += (f"rating {d['rating_bayes_mean']:.2f} (raw {d['rating_mean_raw'] or float('nan'):.2f}, "
                     f"{d['review_count']} reviews, {d['discounted_review_count']} discounted) vs category "
                     f"{d['category_rating_mean']:.2f}")
        else:
            line += f"licence {d['licence_state']}, status {d['status']}, {d['tenure_days']} days on the platform"
        c.print(line, highlight=False, markup=False)
    c.print("reasons:" if data["reasons"] else "reasons: none (no dimension is materially below its benchmark)")
    for r in data["reasons"]:
        c.print(f"  - {r['code']}: {r['detail']} (costs {r['points_lost']:.1f} points)", highlight=False, markup=False)
    cf = data["counterfactual"]
    c.print(f"what would change the score's band: {cf['message']}", highlight=False, markup=False)
    for o in cf["options"]:
        if "needed_rate" in o:
            c.print(f"  - {o['dimension']}: rate from {_fmt_rate(o['current_rate'])} to at most "
                    f"{_fmt_rate(o['needed_rate'])}", highlight=False, markup=False)
        else:
            c.print(f"  - {o['dimension']}: adjusted rating from {o['current_rating']:.2f} to {o['needed_rating']:.2f}",
                    highlight=False, markup=False)
    en = data.get("enforcement") or {}
    if en.get("next_tier"):
        c.print(f"enforcement (the tier in force is {en['enforced_tier']}; it moves by the ladder's rules, not by the "
                f"band alone): {en['message']}", highlight=False, markup=False)
    r = cf["rolloff"]
    c.print(f"old evidence: the oldest day in the window ({r['oldest_evidence_day']}) drops out on "
            f"{r['oldest_evidence_leaves_on']}; everything counted today is gone by "
            f"{r['all_current_evidence_gone_by']} "
            f"(and weighs half after {r['half_life_days']:g} days)", highlight=False, markup=False)


__all__ = ["REASON_CODES", "explain_merchant", "explain_row", "render_text"]
