"""The Bayes oracle of transforms.evaluation on tiny inline cases with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from transforms.evaluation import ORACLE_EVIDENCE, oracle_loglik, oracle_posterior


def _prior() -> pl.DataFrame:
    """Two candidates in category "x", alike except their defect rate: A (1 %, score 90), B (5 %, score 60)."""
    same = {"nad": 0.005, "late": 0.03, "cancel": 0.01, "p_negative": 0.1, "no_response": 0.02,
            "response_hours": 8.0, "unresolved": 0.1, "return_reject": 0.05, "return_pending": 0.01,
            "decide_hours": 24.0}
    return pl.DataFrame({"category": ["x", "x"], "archetype": ["good", "poor_quality"], "defect": [0.01, 0.05],
                         **{k: [v, v] for k, v in same.items()}, "score_licensed": [90.0, 60.0]})


def _evidence(**counts: float) -> pl.DataFrame:
    row = {c: float(counts.get(c, 0.0)) for c in ORACLE_EVIDENCE}
    return pl.DataFrame({"merchant_id": ["M1"], "category": ["x"], **{k: [v] for k, v in row.items()}})


# 100 orders, 2 quality returns, nothing else. Quality returns are Poisson with mean
# 100 * (0.75 * defect + 0.002): 0.95 under A, 3.95 under B. Every other term is the same
# for both candidates, so log L(B) - log L(A) = 2 ln(3.95 / 0.95) - (3.95 - 0.95) = -0.1500,
# P(B | evidence) = 1 / (1 + e^0.1500) = 0.4626 and the posterior mean is
# 90 * 0.5374 + 60 * 0.4626 = 76.12.
LOG_RATIO = 2 * math.log(3.95 / 0.95) - 3.0
P_B = 1 / (1 + math.exp(-LOG_RATIO))


def test_loglik_difference_is_the_poisson_likelihood_ratio() -> None:
    ev = _evidence(orders=100, quality_returns=2)
    cand = {c: _prior()[c].to_numpy() for c in _prior().columns if c not in ("category", "archetype")}
    ll = oracle_loglik({c: ev[c].to_numpy() for c in ORACLE_EVIDENCE}, cand)
    assert ll.shape == (1, 2)
    assert ll[0, 1] - ll[0, 0] == pytest.approx(LOG_RATIO, abs=1e-9)
    assert abs(LOG_RATIO - (-0.1500)) < 1e-4


def test_posterior_mean_hand_computed() -> None:
    out = oracle_posterior(_evidence(orders=100, quality_returns=2), _prior())
    assert abs(P_B - 0.4626) < 1e-4
    assert out["oracle_score"][0] == pytest.approx(90 * (1 - P_B) + 60 * P_B, abs=1e-9)
    assert out["oracle_score"][0] == pytest.approx(76.12, abs=0.01)
    # Kish effective sample size of the weights (1 - p, p): 1 / ((1 - p)^2 + p^2).
    assert out["effective_candidates"][0] == pytest.approx(1 / ((1 - P_B) ** 2 + P_B**2), abs=1e-9)


def test_licence_is_observed_exactly() -> None:
    out = oracle_posterior(_evidence(orders=100, quality_returns=2, licence_bad=1), _prior())
    assert out["oracle_score"][0] == pytest.approx(0.65 * (90 * (1 - P_B) + 60 * P_B), abs=1e-9)


def test_ignored_evidence_leaves_the_prior_mean() -> None:
    out = oracle_posterior(_evidence(orders=100, quality_returns=2), _prior(), ignore=("returns",))
    assert out["oracle_score"][0] == pytest.approx(75.0)


def test_more_defects_lower_the_posterior_and_known_archetype_pins_it() -> None:
    few = oracle_posterior(_evidence(orders=100, quality_returns=1), _prior())["oracle_score"][0]
    many = oracle_posterior(_evidence(orders=100, quality_returns=6), _prior())["oracle_score"][0]
    assert 60 < many < few < 90
    known = oracle_posterior(_evidence(orders=100, quality_returns=6), _prior(),
                             known_archetype=pl.Series(["good"]))
    assert known["oracle_score"][0] == pytest.approx(90.0)


def test_merchants_are_scored_against_their_own_category_only() -> None:
    prior = pl.concat([_prior(), _prior().with_columns(pl.lit("y").alias("category"),
                                                       pl.Series("score_licensed", [10.0, 10.0]))])
    other = _evidence(orders=100).with_columns(pl.lit("M2").alias("merchant_id"), pl.lit("y").alias("category"))
    ev = pl.concat([_evidence(orders=100, quality_returns=2), other])
    out = oracle_posterior(ev, prior)
    assert out["merchant_id"].to_list() == ["M1", "M2"]
    assert np.allclose(out["oracle_score"].to_numpy(), [90 * (1 - P_B) + 60 * P_B, 10.0])
