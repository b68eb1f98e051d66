"""Enforcement actions: turn today's tiers into the actions feed.

One row per merchant whose enforcement tier changes on the score date, with a
statement of reasons a merchant can read (EU DSA art. 17): the facts, the rule
and policy version, that the decision was automated, and how to appeal.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from transforms.policy import Policy

APPEAL_DAYS = 183  # DSA art. 20: appeals stay open for at least six months


def tier_rank(policy: Policy) -> dict[str, int]:
    """Severity of each tier: 0 for the best; insufficient evidence is outside the ladder (-1)."""
    ranks = {t.name: i for i, t in enumerate(policy.tiers)}
    ranks[policy.insufficient_evidence_tier] = -1
    return ranks


def build_actions(today: pl.DataFrame, previous: pl.DataFrame | None, policy: Policy, day: date,
                  run_id: str) -> pl.DataFrame:
    """Actions for merchants whose tier differs from the previous published day.

    A merchant seen for the first time starts in its tier without an action unless
    that tier is a penalty tier (below the best one).
    """
    ranks = tier_rank(policy)
    prev = (previous.select("merchant_id", pl.col("tier").alias("from_tier")) if previous is not None
            else pl.DataFrame(schema={"merchant_id": pl.String, "from_tier": pl.String}))
    best = policy.tiers[0].name
    joined = today.join(prev, on="merchant_id", how="left").filter(
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
