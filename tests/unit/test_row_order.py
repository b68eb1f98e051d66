"""The per-merchant sums add rows up in their input order, so every step before them keeps it.

Floating-point addition is not associative: the decayed weights of a merchant's complaints,
added in another order, differ in the last bits, and a rerun of a date must give the very
same numbers. A join without ``maintain_order`` may return its rows in any order: Polars'
in-memory hash join does, from one run to the next, when its input is a scan of several
files (as every input of a score shard is).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.unit.scoring_fixtures import COMPLAINT_SCHEMA
from transforms.manipulation import discount_complaints, discount_reviews
from transforms.policy import load_policy
from transforms.scoring import _in_window

ROWS = 200_000
POLICY = load_policy()
DAY = date(2026, 6, 29)


def _complaints() -> pl.DataFrame:
    i = pl.col("i")
    none = pl.lit(None, pl.Datetime("us", "UTC"))
    return pl.DataFrame({"i": range(ROWS)}).select(
        ("C" + i.cast(pl.String)).alias("complaint_id"),
        ("M" + (i * 7919 % 3000).cast(pl.String)).alias("merchant_id"),
        ("U" + (i * 104729 % 150_000).cast(pl.String)).alias("complainant_id"),
        pl.lit("app").alias("channel"),
        # Every 10th complaint falls on one of two days: collective complaints (surges).
        (pl.lit(datetime(2026, 1, 1, tzinfo=UTC)).dt.cast_time_unit("us")
         + pl.duration(hours=pl.when(i % 10 == 0).then(24 * 90 + i % 48).otherwise(i * 13 % (180 * 24))))
        .alias("opened_at"),
        none.alias("first_response_at"),
        none.alias("resolved_at"),
        pl.lit("open").alias("status"),
        pl.lit("quality").alias("category"),
    ).select(list(COMPLAINT_SCHEMA)).cast(COMPLAINT_SCHEMA)  # type: ignore[arg-type]


def _review_aggregates() -> pl.DataFrame:
    i = pl.col("i")
    return pl.DataFrame({"i": range(ROWS)}).select(
        ("M" + (i * 7919 % 3000).cast(pl.String)).alias("merchant_id"),
        (pl.lit(date(2026, 1, 1)) + pl.duration(days=i * 31 % 180)).dt.date().alias("event_day"),
        (i % 3 == 0).alias("verified_purchase"),
        (1 + i % 5).cast(pl.Int64).alias("rating"),
        (i % 11 == 0).alias("is_mismatch"),
        pl.when(i % 3 == 0).then(None).otherwise(i % 17).cast(pl.UInt64).alias("text_hash"),
        (1 + i % 4).cast(pl.Int64).alias("n"),
    )


def _scan(frame: pl.DataFrame, folder: Path, parts: int = 8) -> pl.LazyFrame:
    """The frame as the pipeline reads its inputs: a scan of several Parquet files, filtered."""
    folder.mkdir()
    size = -(-frame.height // parts)
    files = []
    for k in range(parts):
        files.append(folder / f"part-{k}.parquet")
        frame.slice(k * size, size).write_parquet(files[-1], row_group_size=10_000)
    return pl.scan_parquet(files).filter(MINE)


MINE = pl.col("merchant_id").str.slice(1).cast(pl.Int64) % 4 != 3  # one shard's merchants, say


@pytest.mark.parametrize(("make", "discount", "added"), [
    (_complaints, discount_complaints, ["is_surge", "complaint_weight"]),
    (_review_aggregates, discount_reviews, ["discount_reason", "review_weight"]),
], ids=["complaints", "reviews"])
def test_the_discounts_keep_their_input_order(tmp_path: Path, make: Callable[[], pl.DataFrame],
                                              discount: Callable[..., pl.LazyFrame], added: list[str]) -> None:
    frame = make()
    scan = _scan(frame, tmp_path / "input")
    for _ in range(3):
        got = discount(scan, POLICY, "Asia/Shanghai").collect(engine="in-memory")
        assert_frame_equal(got.drop(added), frame.filter(MINE))


def test_the_window_keeps_the_rows_order(tmp_path: Path) -> None:
    frame = _review_aggregates()
    scan = _scan(frame, tmp_path / "reviews")
    merchants = frame.get_column("merchant_id").unique(maintain_order=True)
    windows = pl.DataFrame({"merchant_id": merchants,
                            "window_start": pl.Series([DAY - timedelta(days=179)] * merchants.len())})
    for _ in range(3):
        got = _in_window(scan, pl.col("event_day"), windows, DAY, 30.0).collect(engine="in-memory")
        assert_frame_equal(got.select(frame.columns), frame.filter(MINE))
