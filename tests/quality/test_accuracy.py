"""Accuracy of the model against a generated marketplace's hidden truth (fixed seed, no timing).

Targets and measured values are reported in docs/scoring.md ("Accuracy on generated
marketplaces", "Predictive validity"). The Spearman floor here is a regression guard set
below the measured value. The issue's 0.85 target is not reachable with this much evidence
by any estimator: the Bayes posterior mean under the generator's own prior reaches
0.82-0.84 (test_bayes_oracle_bounds_what_the_evidence_allows; see the docs).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from transforms.evaluation import evaluate, oracle_bayes, oracle_prior, predictive_validity
from transforms.generate import generate_marketplace
from transforms.pipeline import run_date
from transforms.settings import Settings

pytestmark = [pytest.mark.quality, pytest.mark.slow]


#: Predictive validity: scores published this many days before the marketplace's last day
#: are compared with the bad outcomes of the days after them.
HORIZON_DAYS = 60


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    """One generated marketplace scored on its last day from an empty lake: (root, scores)."""
    root = tmp_path_factory.mktemp("quality")
    summary = generate_marketplace(root, merchants=2000, days=120, seed=11, show_progress=False)
    result = run_date(summary.end, Settings(root=str(root)))
    assert result.exit_code in (0, 4), result.message
    return root, pl.read_parquet(root / "scores" / f"score_date={summary.end}")


@pytest.fixture(scope="module")
def scored(market: tuple[Path, pl.DataFrame]) -> tuple[pl.DataFrame, Path]:
    root, scores = market
    return scores, root / "truth"


@pytest.fixture(scope="module")
def predictive(market: tuple[Path, pl.DataFrame]) -> dict[str, Any]:
    """Scores published HORIZON_DAYS before the end (the lake already holds the later deliveries)."""
    root, scores = market
    early = scores["score_date"][0] - timedelta(days=HORIZON_DAYS)
    result = run_date(early, Settings(root=str(root)))
    assert result.exit_code in (0, 4), result.message
    published = pl.read_parquet(root / "scores" / f"score_date={early}")
    return predictive_validity(published, root, horizon_days=HORIZON_DAYS)


def test_scores_rank_merchants_by_true_conduct(scored: tuple[pl.DataFrame, Path]) -> None:
    report = evaluate(*scored)
    assert report["merchants_ranked"] >= 800
    assert report["spearman"] >= 0.70


def test_bayes_oracle_bounds_what_the_evidence_allows(market: tuple[Path, pl.DataFrame]) -> None:
    """The Bayes posterior mean under the generator's own prior (docs/scoring.md, "What an
    oracle reaches"): measured 0.825 on seed 11, with the published score 0.725 on the same
    merchants. The floor is a regression guard below the measured value."""
    root, scores = market
    report = oracle_bayes(root, scores, prior=oracle_prior(200_000))
    assert report["merchants_ranked"] >= 800
    assert report["spearman"] >= 0.80, report
    assert report["spearman"] > report["spearman_score"] + 0.05, report


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


def test_score_predicts_later_bad_outcomes_better_than_the_average_rating(predictive: dict[str, Any]) -> None:
    """Scores published 60 days before the end rank merchants by their later misconduct.

    The outcome is ``balanced`` (see :func:`transforms.evaluation.predictive_validity`):
    each kind of bad outcome (quality, description, unresolved complaints, late or
    cancelled orders) against the category's rate, averaged. Measured values for three
    seeds are in docs/scoring.md ("Predictive validity"); the margin asserted here is below
    the smallest one measured (0.10). The plain rating ranks the *pooled* bad-outcome rate
    across categories better, because it carries each category's base rate, which the
    score deliberately benchmarks away; that comparison is reported there, not asserted.
    """
    r = predictive
    assert r["merchants"] >= 500, r
    score, rating = r["score"], r["average_rating"]
    assert score["balanced"]["spearman"] >= rating["balanced"]["spearman"] + 0.08, r
    assert score["pooled_within_category"]["spearman"] >= rating["pooled_within_category"]["spearman"], r
    # A real predictor, not merely a better one: the worst tenth is found well above chance.
    assert score["balanced"]["spearman"] >= 0.35, r
    assert score["balanced"]["auc"] >= 0.65, r
    assert score["pooled"]["auc"] >= 0.65, r
