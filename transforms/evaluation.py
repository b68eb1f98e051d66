"""Accuracy of the scores against a generated marketplace's hidden truth.

Only tests and benchmarks use this module; the pipeline never reads ``truth/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

#: The reason code each bad archetype should produce, by the dimension it damages.
EXPECTED_REASON = {
    "poor_quality": "quality_defect_rate_high",
    "misleading": "description_mismatch_rate_high",
    "neglectful_after_sales": "after_sales_failure_rate_high",
    "late_fulfilment": "fulfilment_failure_rate_high",
    "unlicensed": "compliance_problem",
    "review_buyer": "quality_defect_rate_high",
}
PENALTY_TIERS = ("warning", "restricted", "suspended")


def evaluate(scores: pl.DataFrame, truth_dir: Path | str, *, min_orders: int = 100) -> dict[str, Any]:
    """Compare published scores with the hidden truth.

    Returns the Spearman rank correlation between ``score`` and ``true_conduct_score``
    for merchants with at least ``min_orders`` orders in their window, the share of
    each bad archetype with that much evidence whose expected reason is among the
    first two reason codes, and the good merchants with fewer than 30 orders placed
    in a penalty tier.
    """
    truth = pl.read_parquet(Path(truth_dir) / "merchants.parquet")
    j = scores.join(truth.select("merchant_id", "archetype", "true_conduct_score"), on="merchant_id", how="inner")
    big = j.filter(pl.col("orders_count") >= min_orders)
    rho = big.select(pl.corr("score", "true_conduct_score", method="spearman")).item() if big.height > 2 else None
    reasons: dict[str, Any] = {}
    for archetype, code in EXPECTED_REASON.items():
        sub = j.filter((pl.col("archetype") == archetype) & pl.col("is_sufficient_evidence")
                       & (pl.col("orders_count") >= min_orders))
        # Hard-rule codes (enforcement) come first when they fire; the check is about the
        # score's own dimension reasons, so they are set aside before taking the first two.
        dims = pl.col("reason_codes").list.eval(pl.element().filter(~pl.element().str.starts_with("hard_rule:")))
        hit = sub.filter(dims.list.head(2).list.contains(code)).height
        reasons[archetype] = {"merchants": sub.height, "hits": hit,
                              "share": round(hit / sub.height, 4) if sub.height else None}
    small_good_penalised = j.filter(
        pl.col("archetype").is_in(["good", "bombed_good"]) & (pl.col("orders_count") < 30)
        & pl.col("tier").is_in(PENALTY_TIERS)).height
    return {"spearman": rho, "merchants_ranked": big.height, "reasons": reasons,
            "small_good_penalised": small_good_penalised}
