"""Per-merchant daily aggregates: the incremental path of the nightly run.

Reviews are the largest event source and never change once delivered, so each
delivery day's staged reviews are reduced once to one row per
``(merchant_id, event_day, verified_purchase, rating, is_mismatch, text_hash)``
with a count ``n`` and kept as the lake table ``agg/reviews/dt=X``. The nightly
run builds only the new day's partition and computes windows from the stored
ones, so its cost grows with one day's events plus merchants × window days, not
with the window's raw reviews. Scoring always reads reviews through this table,
so a full recompute from raw (an empty lake) produces the very same numbers.

``text_hash`` is kept only for unverified reviews with text: only they can be
discounted as a duplicate-text campaign, so verified reviews collapse to a few
rows per merchant-day. Sales are already one row per merchant per day (their
own aggregate); complaints and returns change state after delivery and their
deadlines depend on the score date, so they are read as current versions.
"""

from __future__ import annotations

import hashlib

import polars as pl

from transforms.policy import Policy
from transforms.scoring import mismatch_pattern

#: Bump when the aggregate's definition changes: stored partitions with another key are rebuilt.
AGG_VERSION = "reviews-v1"

REVIEW_AGG_SCHEMA = {
    "merchant_id": pl.String(), "event_day": pl.Date(), "verified_purchase": pl.Boolean(), "rating": pl.Int64(),
    "is_mismatch": pl.Boolean(), "text_hash": pl.UInt64(), "n": pl.Int64(),
}


def agg_key(policy: Policy, tz: str) -> str:
    """Fingerprint of everything a review aggregate depends on besides its input rows."""
    d = policy.description
    text = f"{AGG_VERSION}|{tz}|{d.mismatch_max_rating}|{'|'.join(d.mismatch_lexicon)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def normalised_text() -> pl.Expr:
    """Text lower-cased with whitespace, punctuation and symbols removed (campaign copies differ in these)."""
    return pl.col("text").fill_null("").str.to_lowercase().str.replace_all(r"[\s\p{P}\p{S}]+", "")


def review_day_aggregates(reviews: pl.LazyFrame, policy: Policy, tz: str) -> pl.LazyFrame:
    """Reduce staged reviews to daily per-merchant aggregate rows.

    Parameters
    ----------
    reviews
        Staged reviews (merchant_id, rating, text, created_at, verified_purchase).
    policy
        Supplies the mismatch lexicon and the low-rating cut-off.
    tz
        Business time zone: ``event_day`` is the business day of ``created_at``.
    """
    pattern = mismatch_pattern(policy.description.mismatch_lexicon)
    norm = normalised_text()
    return (reviews.select(
        "merchant_id",
        pl.col("created_at").dt.convert_time_zone(tz).dt.date().alias("event_day"),
        pl.col("verified_purchase").fill_null(False),
        "rating",
        ((pl.col("rating") <= policy.description.mismatch_max_rating)
         & pl.col("text").fill_null("").str.contains(pattern)).alias("is_mismatch"),
        pl.when(~pl.col("verified_purchase").fill_null(False) & (norm.str.len_chars() > 0))
        .then(norm.hash(seed=0x7E47)).otherwise(None).alias("text_hash"),
    ).group_by("merchant_id", "event_day", "verified_purchase", "rating", "is_mismatch", "text_hash")
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .sort("merchant_id", "event_day", "verified_purchase", "rating", "is_mismatch", "text_hash",
              nulls_last=False))
