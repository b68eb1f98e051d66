"""The suite runner: failing rows map back to their row ids, on the columns the rules read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from transforms.errors import InputRejected
from transforms.expectations import (
    DELIVERY_END,
    ROW_ID,
    SuiteRunner,
    build_data_docs,
    load_suite,
    store_dir_for,
)


def _reviews() -> pl.DataFrame:
    ts = datetime(2026, 3, 1, 10, tzinfo=UTC)
    return pl.DataFrame({
        "review_id": ["R1", "R2", None, "R 4"],
        "merchant_id": ["M1", "M1", "M2", "M2"],
        "order_id": [[1], [2], [3], [4]],  # read by no rule: never copied to pandas
        "reviewer_id": ["p_1", "p_2", "p_3", "p_4"],
        "rating": [5, 9, 3, 4],
        "text": ["fine", "ok", "x" * 10_001, None],
        "created_at": [ts, ts, ts, datetime(2026, 3, 3, tzinfo=UTC)],
        "verified_purchase": [True, False, True, True],
        DELIVERY_END: [datetime(2026, 3, 2, tzinfo=UTC)] * 4,
        ROW_ID: [10, 11, 12, 13],
    })


def test_failing_rows_map_back_to_row_ids_and_reason_codes() -> None:
    runner = SuiteRunner(load_suite("reviews"))
    assert runner.columns is not None
    assert "order_id" not in runner.columns
    result = runner.run(_reviews())
    assert not result.success
    assert result.row_failures == {
        "out_of_range:rating": [11],
        "missing_value:review_id": [12],
        "text_too_long:text": [12],
        "invalid_identifier:review_id": [13],
        "after_delivery:created_at": [13],
    }
    assert result.evaluated == 4


def test_a_rule_about_the_whole_table_sees_every_column() -> None:
    suite = load_suite("reviews")
    suite = suite | {"expectations": [*suite["expectations"], {
        "type": "expect_table_column_count_to_equal", "kwargs": {"value": 10},
        "meta": {"reason_code": "columns", "rule": "ten columns"}}]}
    runner = SuiteRunner(suite)
    assert runner.columns is None
    result = runner.run(_reviews())
    assert "columns" not in result.batch_failures  # it counted all ten columns


def test_row_ids_need_not_be_positions() -> None:
    """The ids come from ``_row_id`` (a slice of a batch, shuffled rows), never from row positions."""
    frame = _reviews().with_columns(pl.Series(ROW_ID, [103, 7, 55, 20])).reverse()
    result = SuiteRunner(load_suite("reviews")).run(frame)
    assert result.row_failures == {
        "out_of_range:rating": [7],
        "missing_value:review_id": [55],
        "text_too_long:text": [55],
        "invalid_identifier:review_id": [20],
        "after_delivery:created_at": [20],
    }


def test_every_failing_row_is_listed_not_a_sample() -> None:
    n = 2_500
    frame = pl.concat([_reviews()] * (n // 4)).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).mul(3).alias(ROW_ID))
    result = SuiteRunner(load_suite("reviews")).run(frame)
    assert result.row_failures["out_of_range:rating"] == list(range(3, 3 * n, 12))
    assert result.row_failures["missing_value:review_id"] == list(range(6, 3 * n, 12))
    assert result.evaluated == n


def test_duplicates_list_every_duplicated_row() -> None:
    suite = {"name": "dup_suite", "expectations": [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "merchant_id"},
         "meta": {"reason_code": "grain", "rule": "one row per merchant"}}]}
    frame = pl.DataFrame({"merchant_id": ["M1", "M2", "M1", None, "M3", "M2"], ROW_ID: [5, 6, 7, 8, 9, 10]})
    result = SuiteRunner(suite).run(frame)
    assert result.row_failures == {"grain": [5, 6, 7, 10]}
    assert not result.success


def test_a_batch_without_row_ids_is_rejected_only_when_a_row_fails() -> None:
    runner = SuiteRunner(load_suite("reviews"))
    clean = _reviews().head(2).with_columns(pl.lit(3).alias("rating")).drop(ROW_ID)
    assert runner.run(clean).success
    with pytest.raises(InputRejected, match=ROW_ID):
        runner.run(_reviews().drop(ROW_ID))


def test_results_are_stored_and_the_docs_build(tmp_path: Path) -> None:
    docs = tmp_path / "data_docs"
    runner = SuiteRunner(load_suite("reviews"), docs_dir=docs, batch_name="reviews", build_docs=False)
    assert runner.run(_reviews()).row_failures["out_of_range:rating"] == [11]
    stored = list((store_dir_for(docs) / "validations" / "reviews_suite").rglob("*.json"))
    assert len(stored) == 1
    index = build_data_docs(docs)
    assert index is not None
    assert "reviews_suite" in Path(index).read_text(encoding="utf-8")
