"""How good the scores are: against a generated marketplace's hidden truth, and against the future.

:func:`evaluate` compares scores with ``truth/`` (generated marketplaces only);
:func:`predictive_validity` compares scores published on a day with the merchants' bad
outcomes after it, read from the lake alone, so it works on real data as well. Only tests
and benchmarks use this module; the pipeline never reads ``truth/``.
"""

from __future__ import annotations

from datetime import date, timedelta
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


#: Kinds of later bad outcome and the count columns of :func:`later_outcomes` behind each.
OUTCOME_KINDS = {
    "quality": ("quality_returns", "quality_complaints"),
    "description": ("nad_returns", "nad_complaints"),
    "service": ("unresolved_complaints",),
    "fulfilment": ("late_or_cancelled",),
}
_OUTCOME_COUNTS = ["orders", "late_or_cancelled", "quality_returns", "nad_returns", "quality_complaints",
                   "nad_complaints", "unresolved_complaints"]


def _staged(root: Path, source: str, after: date) -> pl.LazyFrame | None:
    """Staged rows of ``source`` delivered after ``after`` (current versions of versioned sources)."""
    from transforms.schemas import SOURCES
    from transforms.validation import current_versions

    dirs = sorted(p for p in (root / "staged" / source).glob("dt=*")
                  if date.fromisoformat(p.name[3:]) > after and any(p.glob("*.parquet")))
    if not dirs:
        return None
    scan = pl.scan_parquet([str(d / "*.parquet") for d in dirs])
    spec = SOURCES[source]
    return current_versions(scan, spec) if spec.versioning == "versioned" else scan


def later_outcomes(root: Path | str, after: date, horizon_days: int, *, tz: str = "UTC",
                   resolution_deadline_days: float = 14.0) -> pl.DataFrame:
    """Per merchant, its orders and bad outcomes in the ``horizon_days`` days after ``after``.

    Read from the staged lake (current versions; a later run must have staged the
    period's deliveries), for events whose business day lies in
    (``after``, ``after + horizon_days``]:

    * ``quality_returns`` / ``nad_returns``: returns for a defect or damage / for not as described;
    * ``quality_complaints`` / ``nad_complaints``: complaints about quality or counterfeits /
      about goods not as described;
    * ``unresolved_complaints``: complaints of any category still open or escalated, or
      resolved, more than ``resolution_deadline_days`` days after they were opened (as of
      the newest complaint version in the lake);
    * ``late_or_cancelled``: late shipments plus seller cancellations.

    ``bad_outcomes`` is their sum and ``bad_rate`` the sum per order.
    """
    root = Path(root)
    end = after + timedelta(days=horizon_days)

    def in_period(day: pl.Expr) -> pl.Expr:
        return (day > after) & (day <= end)

    frames: list[pl.LazyFrame] = []
    sales = _staged(root, "sales", after)
    if sales is None:
        raise ValueError(f"no staged sales after {after} under {root}: run a later date first")
    frames.append(sales.filter(in_period(pl.col("date"))).group_by("merchant_id").agg(
        pl.col("orders").sum().alias("orders"),
        (pl.col("late_shipments") + pl.col("cancellations")).sum().alias("late_or_cancelled")))
    returns = _staged(root, "returns", after)
    if returns is not None:
        frames.append(returns.filter(in_period(pl.col("requested_at").dt.convert_time_zone(tz).dt.date()))
                      .group_by("merchant_id").agg(
                          pl.col("reason").is_in(["quality_defect", "damaged"]).sum().alias("quality_returns"),
                          (pl.col("reason") == "not_as_described").sum().alias("nad_returns")))
    complaints = _staged(root, "complaints", after)
    if complaints is not None:
        last = complaints.select(pl.col("updated_at").max()).collect().item()
        deadline_us = int(resolution_deadline_days * 24 * 3_600_000_000)
        unresolved = ((pl.col("status").is_in(["open", "escalated"])
                       & ((pl.lit(last) - pl.col("opened_at")).dt.total_microseconds() > deadline_us))
                      | ((pl.col("resolved_at") - pl.col("opened_at")).dt.total_microseconds() > deadline_us)
                      ).fill_null(False)
        frames.append(complaints.filter(in_period(pl.col("opened_at").dt.convert_time_zone(tz).dt.date()))
                      .group_by("merchant_id").agg(
                          pl.col("category").is_in(["quality", "counterfeit"]).sum().alias("quality_complaints"),
                          (pl.col("category") == "not_as_described").sum().alias("nad_complaints"),
                          unresolved.sum().alias("unresolved_complaints")))
    out = frames[0]
    for f in frames[1:]:
        out = out.join(f, on="merchant_id", how="left")
    got = out.collect()
    got = got.with_columns([pl.col(c).fill_null(0).cast(pl.Int64) if c in got.columns
                            else pl.lit(0, pl.Int64).alias(c) for c in _OUTCOME_COUNTS[1:]])
    bad = pl.sum_horizontal(_OUTCOME_COUNTS[1:])
    return (got.with_columns(bad.alias("bad_outcomes"))
            .with_columns(pl.when(pl.col("orders") > 0).then(pl.col("bad_outcomes") / pl.col("orders"))
                          .otherwise(None).alias("bad_rate"))
            .select("merchant_id", *_OUTCOME_COUNTS, "bad_outcomes", "bad_rate").sort("merchant_id"))


def _auc(frame: pl.DataFrame, predictor: str, positive: str) -> float | None:
    """Area under the ROC curve of ``-predictor`` (low = predicted bad) for the ``positive`` flag.

    Mann-Whitney form with average ranks, so ties count one half.
    """
    n_pos = int(frame[positive].sum())
    n_neg = frame.height - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = (-frame[predictor]).rank("average")
    r_pos = float(ranks.filter(frame[positive]).sum())
    return (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _worst(col: str, share: float) -> pl.Expr:
    """True for the ``share`` of rows with the highest ``col`` (ties broken by merchant_id)."""
    n = (pl.len() * share).ceil().clip(lower_bound=1)
    return pl.struct(pl.col(col).neg(), "merchant_id").rank("ordinal") <= n


PREDICTORS = {"score": "score", "average_rating": "average_rating"}


def predictive_validity(scores: pl.DataFrame, root: Path | str, *, horizon_days: int = 60,
                        min_orders: int = 100, worst_share: float = 0.10, tz: str = "UTC") -> dict[str, Any]:
    """How well scores published on a day rank merchants by their bad outcomes afterwards.

    ``scores`` are the rows published for one ``score_date`` D; the outcomes are those of
    :func:`later_outcomes` in the ``horizon_days`` days after D. For every merchant with
    sufficient evidence on D and at least ``min_orders`` orders in the later period, two
    predictors known on D are compared: the composite ``score`` and the merchant's plain
    average star rating over the same window (``rating_mean_raw``; a merchant without
    reviews gets the mean of the others). Two outcomes are predicted:

    * ``pooled``: all bad outcomes per order (``bad_rate``), as a buyer meets them. Late
      shipments are the most frequent kind, so they weigh most, and categories with high
      base rates (electronics, apparel) rank worst whatever the merchant does;
    * ``balanced``: for each of the four kinds of :data:`OUTCOME_KINDS`, the merchant's
      later count over the count its orders would have at its category's pooled rate (one
      pseudo-event added to both), averaged over the kinds: how much worse than its peers
      the merchant turned out, every kind of harm counting alike.

    For each predictor and outcome: ``spearman``, the rank correlation with the outcome
    (sign flipped, so higher = the predictor ranks later-bad merchants lower), and ``auc``,
    the probability that a merchant in the worst ``worst_share`` of the outcome is ranked
    below one that is not (0.5 = chance). ``pooled_within_category`` repeats ``spearman``
    on the pooled rate divided by its category's median.
    """
    day = scores["score_date"][0]
    outcomes = later_outcomes(root, day, horizon_days, tz=tz)
    j = (scores.filter(pl.col("is_sufficient_evidence"))
         .select("merchant_id", "category", "score", "rating_mean_raw")
         .join(outcomes, on="merchant_id", how="inner")
         .filter(pl.col("orders") >= min_orders))
    out: dict[str, Any] = {"score_date": day, "horizon_days": horizon_days, "merchants": j.height}
    if j.height < 10:
        return out
    kinds = []
    for cols in OUTCOME_KINDS.values():
        num = pl.sum_horizontal(cols)
        expected = pl.col("orders") * num.sum().over("category") / pl.col("orders").sum().over("category")
        # Observed over expected count, each with one pseudo-event added: a smoothed
        # standardised ratio, so one unresolved complaint where 0.1 was expected does not
        # outweigh every other kind of outcome.
        kinds.append((num + 1.0) / (expected + 1.0))
    j = j.with_columns(
        pl.col("rating_mean_raw").fill_null(pl.col("rating_mean_raw").mean()).alias("average_rating"),
        (pl.sum_horizontal(kinds) / len(kinds)).alias("balanced"),
        (pl.col("bad_rate") / pl.col("bad_rate").median().over("category").clip(lower_bound=1e-9))
        .alias("pooled_relative"),
    ).with_columns(_worst("bad_rate", worst_share).alias("_worst_pooled"),
                   _worst("balanced", worst_share).alias("_worst_balanced"))
    out["worst_merchants"] = int(j["_worst_pooled"].sum())
    for name, col in PREDICTORS.items():
        def rho(target: str, c: str = col) -> float:
            return float(-j.select(pl.corr(c, target, method="spearman")).item())

        out[name] = {
            "pooled": {"spearman": rho("bad_rate"), "auc": _auc(j, col, "_worst_pooled")},
            "pooled_within_category": {"spearman": rho("pooled_relative")},
            "balanced": {"spearman": rho("balanced"), "auc": _auc(j, col, "_worst_balanced")},
        }
    return out
