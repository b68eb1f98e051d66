"""Review-campaign detection: down-weight suspicious reviews, never delete them.

China's E-commerce Law (art. 39) forbids deleting consumers' reviews, so a review
that looks bought or planted keeps its row; it only weighs less in the
satisfaction and description measures, and the score row says how many reviews
were discounted and why (``discounted_review_count``, ``discount_reasons``).

A review is suspicious when it is **unverified** (no purchase behind it) and
either falls on a *burst day* (a merchant-day with at least ``burst_min_reviews``
reviews and ``burst_multiple`` times the merchant's median day) or belongs to a
*duplicate-text cluster* (the same normalised text at least ``duplicate_text_min``
times for one merchant). Verified reviews are never discounted: an order stands
behind each of them. Both five-star campaigns (bought reviews) and one-star
campaigns (review bombing by a competitor) are caught by the same rules.
"""

from __future__ import annotations

import polars as pl

from transforms.policy import Policy


def discount_reviews(reviews: pl.LazyFrame, policy: Policy, tz: str) -> pl.LazyFrame:
    """Add ``review_weight`` (1.0 or the policy's suspicious weight) and ``discount_reason``.

    Parameters
    ----------
    reviews
        Reviews inside the scoring window: merchant_id, created_at, text, verified_purchase.
    policy
        Supplies the ``manipulation`` thresholds.
    tz
        Business time zone (a burst is counted per business day).
    """
    m = policy.manipulation
    norm = (pl.col("text").fill_null("").str.to_lowercase()
            .str.replace_all(r"[\s\p{P}\p{S}]+", ""))
    day = pl.col("created_at").dt.convert_time_zone(tz).dt.date()
    lf = reviews.with_columns(norm.alias("_norm"), day.alias("_day"))
    lf = lf.with_columns(pl.len().over("merchant_id", "_day").alias("_day_count"))
    daily = (lf.group_by("merchant_id", "_day").agg(pl.len().alias("_n"))
             .group_by("merchant_id").agg(pl.col("_n").median().alias("_median_day")))
    lf = lf.join(daily, on="merchant_id", how="left")
    burst = (pl.col("_day_count") >= m.burst_min_reviews) & (
        pl.col("_day_count") >= m.burst_multiple * pl.col("_median_day").fill_null(1.0))
    dup = (pl.col("_norm").str.len_chars() > 0) & (
        pl.len().over("merchant_id", "_norm") >= m.duplicate_text_min)
    unverified = ~pl.col("verified_purchase").fill_null(False)
    reason = (pl.when(unverified & burst & dup).then(pl.lit("burst_duplicate_text_unverified"))
              .when(unverified & burst).then(pl.lit("burst_unverified"))
              .when(unverified & dup).then(pl.lit("duplicate_text_unverified"))
              .otherwise(None))
    return (lf.with_columns(reason.alias("discount_reason"))
            .with_columns(pl.when(pl.col("discount_reason").is_not_null()).then(m.suspicious_weight)
                          .otherwise(1.0).alias("review_weight"))
            .drop("_norm", "_day", "_day_count", "_median_day"))
