"""Review-campaign flags on inline frames, pinned to the row-wise formulation they replaced."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import TypeVar

import polars as pl
from polars.testing import assert_frame_equal

from transforms.manipulation import discount_reviews
from transforms.policy import Policy, load_policy

POLICY = load_policy()
T = TypeVar("T")
D = date(2026, 3, 1)
SCHEMA = {"merchant_id": pl.String, "event_day": pl.Date, "verified_purchase": pl.Boolean, "rating": pl.Int64,
          "is_mismatch": pl.Boolean, "text_hash": pl.UInt64, "n": pl.Int64}


def _row_wise(reviews: pl.LazyFrame, policy: Policy) -> pl.LazyFrame:
    """The former :func:`discount_reviews`: windows over every row and the median joined onto each."""
    m = policy.manipulation
    lf = reviews.with_columns(pl.col("n").sum().over("merchant_id", "event_day").alias("_day_count"))
    daily = (lf.group_by("merchant_id", "event_day").agg(pl.col("n").sum().alias("_n"))
             .group_by("merchant_id").agg(pl.col("_n").median().alias("_median_day")))
    lf = lf.join(daily, on="merchant_id", how="left", maintain_order="left")
    burst = (pl.col("_day_count") >= m.burst_min_reviews) & (
        pl.col("_day_count") >= m.burst_multiple * pl.col("_median_day").fill_null(1.0))
    dup = pl.col("text_hash").is_not_null() & (
        pl.col("n").sum().over("merchant_id", "text_hash") >= m.duplicate_text_min)
    unverified = ~pl.col("verified_purchase").fill_null(False)
    reason = (pl.when(unverified & burst & dup).then(pl.lit("burst_duplicate_text_unverified"))
              .when(unverified & burst).then(pl.lit("burst_unverified"))
              .when(unverified & dup).then(pl.lit("duplicate_text_unverified"))
              .otherwise(None))
    return (lf.with_columns(reason.alias("discount_reason"))
            .with_columns(pl.when(pl.col("discount_reason").is_not_null()).then(m.suspicious_weight)
                          .otherwise(1.0).alias("review_weight"))
            .drop("_day_count", "_median_day"))


def _frame(rows: list[tuple[str | None, int | None, bool | None, int | None, int | None]]) -> pl.DataFrame:
    """Rows of (merchant, day offset, verified, text hash, n)."""
    return pl.DataFrame(
        [(mid, None if k is None else D + timedelta(days=k), v, 5, False, h, n) for mid, k, v, h, n in rows],
        schema=SCHEMA, orient="row")


def _check(frame: pl.DataFrame) -> pl.DataFrame:
    got = discount_reviews(frame.lazy(), POLICY, "UTC").collect(engine="in-memory")
    assert_frame_equal(got, _row_wise(frame.lazy(), POLICY).collect(engine="in-memory"), check_exact=True)
    return got


def test_ties_nulls_and_verified_rows_are_flagged_as_before() -> None:
    m = POLICY.manipulation
    assert (m.burst_min_reviews, m.burst_multiple, m.duplicate_text_min) == (8, 4.0, 3)
    got = _check(_frame([
        # A: day totals 2, 2, 2, 8 -> median 2; day 3 reaches both 8 and 4 x 2 exactly.
        ("A", 0, True, None, 2), ("A", 1, True, None, 1),
        ("A", 3, False, 7, 5),     # burst day, and text 7 counts 5 -> both
        ("A", 3, True, None, 3),   # verified: never discounted, but counts in the day total
        ("A", 0, None, 7, None),   # null verified is unverified; null n adds nothing
        ("A", 1, False, 9, 1),     # text 9: 1 unverified + 2 verified = 3 exactly -> duplicate
        ("A", 2, True, 9, 2),
        ("B", None, False, None, 8),  # a null day is a day of its own; median 8 -> 8 < 32
        (None, 0, False, 4, 8),    # a null merchant has no median (1.0): burst, and text 4 counts 8
        (None, 0, False, 4, 0),
    ]))
    assert got["discount_reason"].to_list() == [
        None, None, "burst_duplicate_text_unverified", None, "duplicate_text_unverified",
        "duplicate_text_unverified", None, None, "burst_duplicate_text_unverified",
        "burst_duplicate_text_unverified"]
    assert got["review_weight"].to_list()[2:5] == [m.suspicious_weight, 1.0, m.suspicious_weight]


def test_even_day_counts_take_the_mean_of_the_middle_days() -> None:
    # Day totals 1, 3, 9, 20 -> median 6: 20 < 24 is no burst, 24 would be.
    got = _check(_frame([("A", 0, True, None, 1), ("A", 1, True, None, 3), ("A", 2, True, None, 9),
                         ("A", 3, False, None, 20)]))
    assert got["discount_reason"].null_count() == 4
    got = _check(_frame([("A", 0, True, None, 1), ("A", 1, True, None, 3), ("A", 2, True, None, 9),
                         ("A", 3, False, None, 24)]))
    assert got["discount_reason"].to_list()[3] == "burst_unverified"


def _maybe(r: random.Random, value: T) -> T | None:
    return None if r.random() < 0.05 else value


def test_random_frames_match_the_row_wise_flags() -> None:
    for seed in range(20):
        r = random.Random(seed)
        _check(_frame([(_maybe(r, f"M{r.randint(0, 4)}"), _maybe(r, r.randint(0, 6)),
                        _maybe(r, r.random() < 0.4), None if r.random() < 0.4 else r.randint(0, 3),
                        _maybe(r, r.choice([0, 1, 2, 3, 5, 9, 20]))) for _ in range(r.randint(0, 300))]))


def test_no_rows() -> None:
    assert _check(pl.DataFrame(schema=SCHEMA)).height == 0
