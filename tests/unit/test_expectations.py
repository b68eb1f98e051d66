"""The suite runner: failing rows map back to their row ids, on the columns the rules read."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from transforms.expectations import DELIVERY_END, ROW_ID, SuiteRunner, load_suite


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
