"""Golden output: the committed sample marketplace scores exactly as recorded.

A change to scoring shows up here as a diff of named columns. When the change is intended,
regenerate with ``python -m tests.integration.test_golden`` and review the diff in git.
"""

from __future__ import annotations

import shutil
import sys
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from transforms.pipeline import run_date
from transforms.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "landing"
GOLDEN = REPO / "data" / "golden" / "scores_2026-01-20.parquet"
DAY = date(2026, 1, 20)
#: Columns that name the run rather than describe the merchant.
VOLATILE = ["run_id"]


def score_sample(root: Path) -> pl.DataFrame:
    shutil.copytree(SAMPLE, root / "landing")
    result = run_date(DAY, Settings(root=str(root)))
    assert result.exit_code in (0, 4), result.message
    return pl.read_parquet(root / "scores" / f"score_date={DAY}").drop(VOLATILE)


def test_sample_scores_match_the_golden_file(tmp_path: Path) -> None:
    assert_frame_equal(score_sample(tmp_path), pl.read_parquet(GOLDEN), check_exact=False, rel_tol=1e-9)


if __name__ == "__main__":  # regenerate
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        score_sample(Path(d)).write_parquet(GOLDEN)
        sys.stdout.write(f"wrote {GOLDEN}\n")
