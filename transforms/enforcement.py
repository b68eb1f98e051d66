"""Enforcement: turn today's scores into enforcement states and the actions feed.

One row per merchant whose enforcement tier changes on the score date, with a
statement of reasons a merchant can read (EU DSA art. 17): the facts, the rule
and policy version, that the decision was automated, and how to appeal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl

from transforms.policy import Policy

APPEAL_DAYS = 183  # DSA art. 20: appeals stay open for at least six months


@dataclass
class EnforcementDecision:
    """What enforcement decided for one score date.

    Attributes
    ----------
    scores
        The score rows with ``tier`` set to the enforced tier.
    state
        Enforcement state after the date (ENFORCEMENT_STATE_SCHEMA), carried to the next day.
    actions
        The actions feed rows (ACTIONS_SCHEMA).
    held
        True when a guard holds the actions for human review (exit code 4).
    summary
        Numbers for the manifest (new penalties, guard inputs, hold reason).
    """

    scores: pl.DataFrame
    state: pl.DataFrame
    actions: pl.DataFrame
    held: bool = False
    summary: dict[str, Any] = field(default_factory=dict)


def tier_rank(policy: Policy) -> dict[str, int]:
    """Severity of each tier: 0 for the best; insufficient evidence is outside the ladder (-1)."""
    ranks = {t.name: i for i, t in enumerate(policy.tiers)}
    ranks[policy.insufficient_evidence_tier] = -1
    return ranks


def decide(scores: pl.DataFrame, previous_state: pl.DataFrame | None, recent: list[dict[str, Any]],
           policy: Policy, day: date, run_id: str) -> EnforcementDecision:
    """Enforced tiers, carried state and actions for one date.

    Parameters
    ----------
    scores
        Today's score rows (``tier`` is the evidence-gated score band).
    previous_state
        The enforcement state after the previous published date, or ``None``.
    recent
        Enforcement summaries of recent published runs (oldest first), for guards.
    """
    prev = (previous_state.select("merchant_id", pl.col("state").alias("from_tier"), "since")
            if previous_state is not None
            else pl.DataFrame(schema={"merchant_id": pl.String, "from_tier": pl.String, "since": pl.Date}))
    joined = scores.join(prev, on="merchant_id", how="left")
    state = joined.select(
        "merchant_id", pl.lit(day).alias("score_date"), pl.col("tier").alias("state"),
        pl.when(pl.col("from_tier") == pl.col("tier")).then(pl.col("since")).otherwise(pl.lit(day)).alias("since"),
        "policy_version", pl.lit(run_id).alias("run_id"))
    actions = build_actions(scores, prev, policy, day, run_id)
    ranks = tier_rank(policy)
    penalty = [t for t, r in ranks.items() if r >= 1]
    new_penalties = actions.filter(pl.col("to_tier").is_in(penalty)).height
    return EnforcementDecision(scores=scores, state=state, actions=actions,
                               summary={"new_penalties": new_penalties, "actions": actions.height, "held": False,
                                        "hold_reason": None})


def build_actions(today: pl.DataFrame, prev: pl.DataFrame, policy: Policy, day: date, run_id: str) -> pl.DataFrame:
    """Actions for merchants whose tier differs from their previous enforcement state.

    A merchant seen for the first time starts in its tier without an action unless
    that tier is a penalty tier (below the best one).
    """
    ranks = tier_rank(policy)
    best = policy.tiers[0].name
    joined = today.join(prev.select("merchant_id", "from_tier"), on="merchant_id", how="left").filter(
        (pl.col("from_tier").is_null() & (pl.col("tier") != best)
         & (pl.col("tier") != policy.insufficient_evidence_tier))
        | (pl.col("from_tier").is_not_null() & (pl.col("from_tier") != pl.col("tier"))))
    rank_to = pl.col("tier").replace_strict(ranks, return_dtype=pl.Int32)
    rank_from = pl.col("from_tier").replace_strict(ranks, default=0, return_dtype=pl.Int32)
    action = (pl.when(pl.col("tier") == policy.insufficient_evidence_tier).then(pl.lit("suspend_automation"))
              .when(rank_from == -1).then(pl.lit("resume_automation"))
              .when(rank_to > rank_from).then(pl.lit("escalate"))
              .otherwise(pl.lit("de_escalate")))
    statement = pl.concat_str([
        pl.lit("Automated decision under policy "), pl.col("policy_version"), pl.lit(f" on {day.isoformat()}: "),
        pl.lit("tier changes from "), pl.col("from_tier").fill_null("none"), pl.lit(" to "), pl.col("tier"),
        pl.lit(". Score "), pl.col("score").round(1).cast(pl.String), pl.lit("/100 over the last "),
        pl.col("window_days").cast(pl.String), pl.lit(" days ("), pl.col("orders_count").cast(pl.String),
        pl.lit(" orders, "), pl.col("review_count").cast(pl.String), pl.lit(" reviews, "),
        pl.col("complaint_count").cast(pl.String), pl.lit(" complaints). Facts: "),
        pl.col("reason_details").list.join("; "),
        pl.lit(f". You may appeal within {APPEAL_DAYS} days (until "),
        pl.lit((day + timedelta(days=APPEAL_DAYS)).isoformat()),
        pl.lit(") by replying with a plan of action; a person will review it."),
    ])
    return joined.select(
        "merchant_id", pl.lit(day).alias("score_date"), action.alias("action"), "from_tier",
        pl.col("tier").alias("to_tier"), "reason_codes", statement.alias("statement"),
        pl.lit(day).alias("effective_on"), "score", pl.lit(True).alias("is_automated"),
        pl.lit(day + timedelta(days=APPEAL_DAYS)).alias("appeal_until"), "policy_version",
        pl.lit(run_id).alias("run_id"),
    ).sort("merchant_id")
