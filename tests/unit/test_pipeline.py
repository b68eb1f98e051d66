"""Small helpers of :mod:`transforms.pipeline`'s validate step, on inline frames."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from transforms.pipeline import _days_of_sorted, _with_originals

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)


def test_days_of_a_sorted_frame_are_its_partitions_by_day() -> None:
    frame = pl.DataFrame({"_dt": [D1, D1, D2, D3, D3, D3], "v": [1, 2, 3, 4, 5, 6]})
    got = _days_of_sorted(frame)
    want = frame.partition_by("_dt", as_dict=True, include_key=True)
    assert list(got) == list(want)
    for day, part in want.items():
        assert_frame_equal(got[day], part)
    assert _days_of_sorted(frame.clear()) == {}


def test_quarantined_rows_get_the_delivered_text_of_their_own_row(tmp_path: Path) -> None:
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    # Two typed files read in order, the first in row groups of two rows: row ids run on across them.
    pl.DataFrame({"_original": ['{"r":0}', '{"r":1}', None, '{"r":3}', '{"r":4}']}).write_parquet(
        paths[0], row_group_size=2)
    pl.DataFrame({"_original": ['{"r":5}', '{"r":6}']}).write_parquet(paths[1])
    quarantined = pl.DataFrame({"_row_id": [6, 0, 2, 3], "_dt": [D2, D1, D1, D1]})
    got = _with_originals(quarantined, paths)
    assert got.get_column("_row_id").to_list() == [6, 0, 2, 3]  # the quarantine's own order
    assert got.get_column("_original").to_list() == ['{"r":6}', '{"r":0}', None, '{"r":3}']
    empty = _with_originals(quarantined.clear(), paths)
    assert empty.columns == [*quarantined.columns, "_original"]
    assert empty.height == 0
