"""``add_reasons`` gives exactly the output of its original list-sorting implementation.

The reference below is a verbatim copy of ``add_reasons`` as it was before it was
rewritten for speed; the frames are built to hit its corner cases: ties in points
(kept in dimension order), all points zero, null/NaN/-0.0 points, null detail
parts, empty results and ``max_codes`` smaller than the number of qualifying dimensions.
"""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import pytest

from transforms.policy import DIMENSIONS, RATE_DIMENSIONS, Policy, load_policy
from transforms.scoring import REASON_CODES, _detail, add_reasons, num_col_name, points_lost

POLICY = load_policy()
NAN = float("nan")


def _reference_add_reasons(frame: pl.LazyFrame, policy: Policy) -> pl.LazyFrame:
    weights = policy.dimensions.weights()
    lost = [
        pl.struct(
            pl.lit(REASON_CODES[d]).alias("code"),
            points_lost(d, weights[d]).alias("points"),
            _detail(d).alias("detail"),
        )
        for d in DIMENSIONS
    ]
    ranked = (pl.concat_list(lost).list.eval(
        pl.element().sort_by(pl.element().struct.field("points"), descending=True, maintain_order=True)
    ).list.eval(
        pl.element().filter(pl.element().struct.field("points") >= policy.reasons.min_points_lost)
    ).list.head(policy.reasons.max_codes))
    return frame.with_columns(ranked.alias("_reasons")).with_columns(
        pl.col("_reasons").list.eval(pl.element().struct.field("code")).alias("reason_codes"),
        pl.col("_reasons").list.eval(pl.element().struct.field("detail")).alias("reason_details"),
        pl.col("_reasons").list.eval(pl.element().struct.field("points")).alias("reason_points"),
    ).drop("_reasons")


SCHEMA: dict[str, Any] = {"merchant_id": pl.String, "score": pl.Float64}
for _d in RATE_DIMENSIONS:
    SCHEMA |= {f"{_d}_score": pl.Float64, f"{_d}_rate_shrunk": pl.Float64, f"{_d}_rate_ci_low": pl.Float64,
               f"{_d}_rate_ci_high": pl.Float64, f"{_d}_category_rate": pl.Float64,
               num_col_name(_d): pl.Int64, f"{_d}_exposure_count": pl.Int64}
SCHEMA |= {"satisfaction_score": pl.Float64, "rating_bayes_mean": pl.Float64, "review_count": pl.Int64,
           "category_rating_mean": pl.Float64, "compliance_score": pl.Float64, "licence_state": pl.String,
           "status": pl.String, "tier": pl.String}


def _row(score: float | None = 60.0, subscores: dict[str, float | None] | None = None,
         **extra: Any) -> dict[str, Any]:
    """A merchant at the benchmark on every dimension (no reasons) unless overridden."""
    row: dict[str, Any] = {"score": score, "review_count": 40, "rating_bayes_mean": 4.21,
                           "category_rating_mean": 4.3, "licence_state": "valid", "status": "active",
                           "tier": "good"}
    for d in RATE_DIMENSIONS:
        row |= {f"{d}_rate_shrunk": 0.0123, f"{d}_rate_ci_low": 0.01, f"{d}_rate_ci_high": 0.02,
                f"{d}_category_rate": 0.011, num_col_name(d): 3, f"{d}_exposure_count": 250}
    row |= {f"{d}_score": 100.0 if d == "compliance" else 80.0 for d in DIMENSIONS}
    return row | {f"{d}_score": s for d, s in (subscores or {}).items()} | extra


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{"merchant_id": f"M{i:03d}"} | r for i, r in enumerate(rows)], schema=SCHEMA)


def _policy(max_codes: int | None = None, min_points: float | None = None, equal_weights: bool = False) -> Policy:
    reasons = POLICY.reasons.model_copy(update={
        k: v for k, v in {"max_codes": max_codes, "min_points_lost": min_points}.items() if v is not None})
    update: dict[str, Any] = {"reasons": reasons}
    if equal_weights:  # equal sub-scores then cost exactly equal points: ties
        update["dimensions"] = POLICY.dimensions.model_copy(update={
            d: getattr(POLICY.dimensions, d).model_copy(update={"weight": 1.0}) for d in DIMENSIONS})
    return POLICY.model_copy(update=update)


def _assert_identical(frame: pl.DataFrame, policy: Policy) -> pl.DataFrame:
    got = add_reasons(frame.lazy(), policy).collect(engine="in-memory")
    want = _reference_add_reasons(frame.lazy(), policy).collect(engine="in-memory")
    assert got.schema == want.schema  # dtypes and column order
    assert got.equals(want, null_equal=True)
    # `equals` takes -0.0 for 0.0; their text (shortest round-trip form) tells them apart.
    text = pl.col("reason_points").list.eval(pl.element().cast(pl.String))
    assert got.select(text).equals(want.select(text), null_equal=True)
    return got


ALL_LOW = {d: 40.0 for d in DIMENSIONS}
CASES: dict[str, list[dict[str, Any]]] = {
    "no_reasons": [_row(), _row(score=95.0)],
    "ties": [_row(subscores=ALL_LOW), _row(subscores={"quality": 50.0, "fulfilment": 50.0, "after_sales": 30.0}),
             _row(subscores={"compliance": 50.0, "satisfaction": 50.0, "description": 50.0})],
    "all_zero": [_row(score=0.0, subscores=ALL_LOW), _row(score=-0.0, subscores=ALL_LOW),
                 _row(subscores={d: 100.0 for d in DIMENSIONS})],
    "nulls": [_row(score=None, subscores=ALL_LOW), _row(score=None),
              _row(subscores={"quality": None, "description": 20.0, "satisfaction": None}),
              _row(subscores={d: None for d in DIMENSIONS})],
    "nan": [_row(score=NAN, subscores=ALL_LOW), _row(score=NAN, subscores={"quality": 10.0}),
            _row(subscores={"quality": NAN, "description": 10.0, "compliance": NAN})],
    "null_details": [
        _row(subscores=ALL_LOW, licence_state=None, rating_bayes_mean=None, quality_exposure_count=None,
             description_rate_shrunk=None, after_sales_rate_ci_low=None),
        _row(subscores={"compliance": 10.0, "satisfaction": 5.0}, status=None, review_count=None)],
    "mixed": [_row(subscores={"quality": 10.0, "description": 79.9, "after_sales": 60.0, "fulfilment": 1.0,
                              "satisfaction": 0.0, "compliance": 99.0}),
              _row(score=1e-9, subscores={"quality": 10.0}), _row(score=100.0, subscores={"fulfilment": 79.0})],
}
POLICIES = [_policy(), _policy(max_codes=1), _policy(max_codes=2, min_points=0.0), _policy(max_codes=6),
            _policy(max_codes=6, min_points=0.0), _policy(max_codes=3, min_points=1e6),
            _policy(equal_weights=True), _policy(max_codes=2, min_points=0.0, equal_weights=True),
            _policy(max_codes=6, min_points=0.0, equal_weights=True)]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"max{p.reasons.max_codes}-min{p.reasons.min_points_lost}")
def test_identical_to_the_reference_on_corner_cases(policy: Policy) -> None:
    for rows in CASES.values():
        _assert_identical(_frame(rows), policy)


def test_corner_cases_are_really_exercised() -> None:
    got = _assert_identical(_frame([r for rows in CASES.values() for r in rows]),
                            _policy(max_codes=2, min_points=0.0, equal_weights=True))
    lengths = set(got["reason_codes"].list.len())
    assert lengths == {0, 2}
    assert got["reason_details"].list.eval(pl.element().is_null()).list.any().any()
    assert got["reason_points"].list.eval(pl.element().is_nan()).list.any().any()
    assert got["reason_points"].list.eval(pl.element().cast(pl.String) == "-0.0").list.any().any()
    # With equal weights, ALL_LOW ties on every dimension: dimension order is kept.
    assert got["reason_codes"][0].to_list() == [REASON_CODES["quality"], REASON_CODES["description"]]


def test_identical_to_the_reference_on_random_frames() -> None:
    rnd = random.Random(20260331)
    levels: list[float | None] = [None, NAN, -0.0, 0.0, 1.0, 10.0, 40.0, 40.0, 79.999, 80.0, 99.0, 100.0]
    rows = [_row(score=rnd.choice([None, NAN, -0.0, 0.0, 5.0, 55.5, 55.5, 100.0]),
                 subscores={d: rnd.choice(levels) for d in DIMENSIONS},
                 licence_state=rnd.choice([None, "valid", "expired"]))
            for _ in range(400)]
    frame = _frame(rows)
    for policy in POLICIES:
        _assert_identical(frame, policy)
