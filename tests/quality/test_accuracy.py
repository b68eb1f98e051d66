"""Accuracy of the model against a generated marketplace's hidden truth (fixed seed, no timing).

Targets and measured values are reported in docs/scoring.md ("Accuracy on generated
marketplaces"). The Spearman floor here is a regression guard set below the measured
value; the issue's 0.85 target is not reachable against this generator's truth (even an
oracle that knows every merchant's archetype reaches only ~0.78, see the docs).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from transforms.evaluation import evaluate
from transforms.generate import generate_marketplace
from transforms.pipeline import run_date
from transforms.settings import Settings

pytestmark = [pytest.mark.quality, pytest.mark.slow]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, Path]:
    root = tmp_path_factory.mktemp("quality")
    summary = generate_marketplace(root, merchants=2000, days=120, seed=11, show_progress=False)
    result = run_date(summary.end, Settings(root=str(root)))
    assert result.exit_code in (0, 4), result.message
    return pl.read_parquet(root / "scores" / f"score_date={summary.end}"), root / "truth"


def test_scores_rank_merchants_by_true_conduct(scored: tuple[pl.DataFrame, Path]) -> None:
    report = evaluate(*scored)
    assert report["merchants_ranked"] >= 800
    assert report["spearman"] >= 0.65


def test_bad_archetypes_get_the_matching_reason(scored: tuple[pl.DataFrame, Path]) -> None:
    report = evaluate(*scored)
    for archetype, r in report["reasons"].items():
        assert r["merchants"] >= 20, archetype
        assert r["share"] >= 0.90, (archetype, r)


def test_no_small_good_merchant_is_penalised(scored: tuple[pl.DataFrame, Path]) -> None:
    assert evaluate(*scored)["small_good_penalised"] == 0


def test_attacked_good_merchants_are_not_penalised(scored: tuple[pl.DataFrame, Path]) -> None:
    scores, truth = scored
    t = pl.read_parquet(truth / "merchants.parquet").select("merchant_id", "archetype")
    attacked = scores.join(t, on="merchant_id").filter(pl.col("archetype").is_in(["bombed_good", "collective_dispute"]))
    assert attacked.height > 50
    assert attacked.filter(pl.col("tier").is_in(["warning", "restricted", "suspended"])).height == 0
