"""The pieces of the current-version tables, on inline frames."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from transforms.current import groups_for, key_hash, newest_versions
from transforms.schemas import SOURCES
from transforms.sharding import BUCKETS, bucket_of, with_bucket
from transforms.validation import current_versions


def _returns() -> pl.DataFrame:
    t = lambda h: datetime(2026, 3, 1, h, tzinfo=UTC)  # noqa: E731
    return pl.DataFrame({
        "return_id": ["A", "B", "B", "C", "C", "C", "D", "D"],
        "merchant_id": ["M1", "M1", "M2", "M1", "M1", "M1", "M2", "M2"],
        # C: the newest delivery carries an *older* update, so the middle row wins;
        # D: equal update times, the later delivery day wins.
        "updated_at": [t(1), t(1), t(2), t(5), t(9), t(3), t(4), t(4)],
        "_dt": [date(2026, 3, d) for d in (1, 1, 2, 1, 2, 3, 1, 2)],
        "_file": ["f"] * 8,
        "_row_number": [1, 2, 1, 3, 2, 1, 4, 3],
    }).with_columns(key_hash(SOURCES["returns"]))


def test_newest_versions_agree_with_the_full_version_sort() -> None:
    frame = _returns()
    got = newest_versions(frame, SOURCES["returns"])
    want = current_versions(frame.lazy(), SOURCES["returns"]).collect()
    assert got.sort("return_id").equals(want.select(got.columns).sort("return_id"))
    assert dict(zip(got["return_id"], got["updated_at"].dt.hour(), strict=True)) == {"A": 1, "B": 2, "C": 9, "D": 4}
    assert got.filter(pl.col("return_id") == "D")["_dt"].item() == date(2026, 3, 2)
    assert got["return_id"].to_list() == ["A", "B", "C", "D"]  # the frame's own order is kept


def test_rows_of_keys_seen_once_are_kept_without_sorting() -> None:
    frame = _returns().filter(pl.col("return_id").is_in(["A"]))
    assert newest_versions(frame, SOURCES["returns"]).equals(frame)


def test_sales_keys_hash_both_columns() -> None:
    sales = pl.DataFrame({"merchant_id": ["M1", "M1", "M2"],
                          "date": [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 1)]})
    hashes = sales.select(key_hash(SOURCES["sales"])).to_series()
    assert hashes.n_unique() == 3


@pytest.mark.parametrize(("lo", "hi", "groups"), [(0, 16, [0, 1]), (16, 32, [2, 3]), (0, 64, list(range(8))),
                                                  (5, 6, [0]), (56, 64, [7])])
def test_a_bucket_range_reads_only_the_groups_that_hold_it(lo: int, hi: int, groups: list[int]) -> None:
    assert BUCKETS == 64
    assert groups_for(lo, hi) == groups


def test_with_bucket_keeps_rows_in_order_and_nulls_unbucketed() -> None:
    frame = pl.DataFrame({"merchant_id": ["M2", None, "M1", "M2"], "x": [1, 2, 3, 4]})
    out = with_bucket(frame)
    assert out["x"].to_list() == [1, 2, 3, 4]
    assert out["_bucket"].to_list() == [bucket_of("M2"), None, bucket_of("M1"), bucket_of("M2")]
    assert out["_bucket"].dtype == pl.Int16
