"""Scoring formulas on tiny inline frames, with hand-computed expectations."""

from __future__ import annotations

import math
import random
from datetime import date

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.unit.scoring_fixtures import (
    complaints,
    registry,
    returns,
    reviews,
    run_scores,
    sales,
    ts,
)
from transforms.explain import required_rate
from transforms.policy import load_policy
from transforms.scoring import decay_weight, rate_subscore, wilson_bounds, window_filter, z_value

POLICY = load_policy()


def test_z_value_matches_the_normal_quantile() -> None:
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_value(0.99) == pytest.approx(2.575829, abs=1e-6)


def test_wilson_interval_hand_computed() -> None:
    # 10 of 500 at z = 1.96: centre (0.02 + z²/1000) / (1 + z²/500) = 0.023660,
    # half-width z·sqrt(0.02·0.98/500 + z²/10⁶) / (1 + z²/500) = 0.012761.
    df = pl.DataFrame({"k": [10, 0], "n": [500, 0]})
    lo, hi = wilson_bounds(pl.col("k"), pl.col("n"), z_value(0.95))
    out = df.select(lo.alias("lo"), hi.alias("hi"))
    assert out["lo"][0] == pytest.approx(0.010899, abs=2e-6)
    assert out["hi"][0] == pytest.approx(0.036421, abs=2e-6)
    assert (out["lo"][1], out["hi"][1]) == (0.0, 1.0)


def test_rate_subscore_is_80_at_the_category_rate_and_50_at_k_times() -> None:
    df = pl.DataFrame({"r": [0.01, 0.02, 0.0, 0.04]})
    s = df.select(rate_subscore(pl.col("r"), pl.lit(0.01), 2.0, 2.0).alias("s"))["s"].to_list()
    assert s == pytest.approx([80.0, 50.0, 100.0, 20.0])
    assert required_rate(80.0, 0.01, 2.0, 2.0) == pytest.approx(0.01)


def test_decay_halves_after_one_half_life() -> None:
    w = pl.DataFrame({"a": [0, 45, 90]}).select(decay_weight(pl.col("a"), 45.0))["a"].to_list()
    assert w == pytest.approx([1.0, 0.5, 0.25])


def test_quality_rate_is_shrunk_toward_the_category_and_intervals_published() -> None:
    reg = registry({"merchant_id": "A"}, {"merchant_id": "B"})
    # A: 30 defect returns on 3,000 orders; B: spotless. All events today (no decay).
    ret = returns([{"merchant_id": "A", "requested_at": ts(0), "reason": "quality_defect"}] * 30)
    out = run_scores(reg, sales({"A": 100, "B": 100}), ret=ret)
    a, b = out.row(0, named=True), out.row(1, named=True)
    assert a["quality_defect_count"] == 30
    assert a["quality_exposure_count"] == 3000
    assert a["quality_rate"] == pytest.approx(0.01)
    # Weighted orders differ from raw because of decay; the shrunk rate lies between the
    # category rate and the merchant's decayed rate, and the interval brackets the raw rate.
    assert b["quality_rate_shrunk"] < a["quality_category_rate"] < a["quality_rate_shrunk"]
    assert a["quality_rate_ci_low"] < 0.01 < a["quality_rate_ci_high"]
    assert a["quality_score"] < b["quality_score"]
    assert a["reason_codes"][0] == "quality_defect_rate_high"
    assert "quality_defect_rate_high" not in b["reason_codes"]


def test_bayesian_rating_with_category_prior_and_verified_weight() -> None:
    reg = registry({"merchant_id": "A"}, {"merchant_id": "B"})
    rev = reviews([{"merchant_id": "A", "rating": 1, "created_at": ts(0)},
                   {"merchant_id": "B", "rating": 5, "created_at": ts(0)},
                   {"merchant_id": "B", "rating": 5, "created_at": ts(0), "verified_purchase": False}])
    out = run_scores(reg, sales({"A": 10, "B": 10}), rev=rev)
    # category mean = (1 + 5 + 0.3*5) / (1 + 1 + 0.3) = 7.5 / 2.3
    c = 7.5 / 2.3
    a = out.row(0, named=True)
    assert a["category_rating_mean"] == pytest.approx(c)
    assert a["rating_bayes_mean"] == pytest.approx((1 + 10 * c) / 11)
    b = out.row(1, named=True)
    assert b["rating_bayes_mean"] == pytest.approx((5 + 1.5 + 10 * c) / 11.3)


def test_thin_evidence_gets_the_insufficient_evidence_tier_never_a_penalty() -> None:
    reg = registry({"merchant_id": "A"})
    ret = returns([{"merchant_id": "A", "requested_at": ts(0), "reason": "quality_defect"}] * 3)
    out = run_scores(reg, sales({"A": 1}, days=5), ret=ret)
    row = out.row(0, named=True)
    assert row["orders_count"] == 5
    assert row["tier"] == "insufficient_evidence"
    assert not row["is_sufficient_evidence"]
    assert 0 < row["score"] < 100


def test_after_sales_deadlines_and_escalations() -> None:
    reg = registry({"merchant_id": "A"})
    com = complaints([
        {"merchant_id": "A", "opened_at": ts(20), "first_response_at": ts(20, 12), "status": "resolved",
         "resolved_at": ts(19)},                                      # fine
        {"merchant_id": "A", "opened_at": ts(20)},                    # no response, open 20 days: failure
        {"merchant_id": "A", "opened_at": ts(1), "first_response_at": ts(1, 11)},  # young, fine
        {"merchant_id": "A", "opened_at": ts(5), "channel": "regulator", "first_response_at": ts(5, 11)},
    ])
    out = run_scores(reg, sales({"A": 50}), com=com).row(0, named=True)
    assert out["complaint_count"] == 4
    assert out["after_sales_failure_count"] == 2
    assert out["escalated_complaint_count"] == 1
    assert out["no_timely_response_count"] == 1
    assert out["unresolved_past_deadline_count"] == 1
    assert out["first_response_hours_median"] == pytest.approx(1.0)


def test_expired_licence_in_a_regulated_category_zeroes_compliance() -> None:
    from datetime import date

    reg = registry({"merchant_id": "A", "category": "food", "license_expires_on": date(2026, 1, 1)},
                   {"merchant_id": "B", "category": "books", "license_expires_on": None},
                   {"merchant_id": "C", "category": "food", "license_expires_on": date(2026, 4, 10)})
    out = run_scores(reg, sales({"A": 50, "B": 50, "C": 50}))
    rows = {r["merchant_id"]: r for r in out.iter_rows(named=True)}
    assert (rows["A"]["licence_state"], rows["A"]["compliance_score"]) == ("expired", 0.0)
    assert rows["A"]["reason_codes"][0] == "compliance_problem"
    assert rows["B"]["licence_state"] == "missing"
    assert rows["B"]["compliance_score"] == POLICY.dimensions.compliance.missing_licence_unregulated_score
    assert rows["C"]["licence_state"] == "expiring"


def test_weights_sum_to_one_and_composite_is_the_weighted_geometric_mean() -> None:
    reg = registry({"merchant_id": "A", "category": "food", "license_expires_on": None})
    row = run_scores(reg, sales({"A": 40})).row(0, named=True)
    w = POLICY.dimensions.weights()
    assert math.isclose(sum(w.values()), 1.0)
    assert row["compliance_score"] == 0.0  # floored at 1 inside the mean
    expected = math.prod(max(row[f"{d}_score"], 1.0) ** wd for d, wd in w.items())
    assert row["score"] == pytest.approx(expected)
    # The reason's points are what lifting compliance to 100 would add.
    assert row["reason_points"][0] == pytest.approx(expected * (100.0 ** w["compliance"] - 1.0))


def test_review_campaign_is_discounted_and_reported() -> None:
    reg = registry({"merchant_id": "A"})
    honest = [{"merchant_id": "A", "rating": 2, "created_at": ts(k), "text": f"meh {k}"} for k in range(1, 25)]
    bought = [{"merchant_id": "A", "rating": 5, "created_at": ts(0), "text": "Best shop ever!!",
               "verified_purchase": False, "reviewer_id": f"new{i}"} for i in range(40)]
    with_campaign = run_scores(reg, sales({"A": 40}), rev=reviews(honest + bought)).row(0, named=True)
    without = run_scores(reg, sales({"A": 40}), rev=reviews(honest)).row(0, named=True)
    assert with_campaign["discounted_review_count"] == 40
    assert with_campaign["discount_reasons"] == ["burst_duplicate_text_unverified"]
    assert with_campaign["review_count"] == 64  # nothing deleted
    assert abs(with_campaign["satisfaction_score"] - without["satisfaction_score"]) < 5



def test_every_day_of_a_complaint_surge_is_discounted_not_only_its_last() -> None:
    """A campaign's first days belong to it: 3 + 4 + 5 complaints on three days, one stretch."""
    from transforms.manipulation import discount_complaints

    policy = load_policy()
    usual = [{"merchant_id": "A", "opened_at": ts(10 * k + 20), "complainant_id": f"old{k}"} for k in range(5)]
    surge = [{"merchant_id": "A", "opened_at": ts(day), "complainant_id": f"angry{day}_{i}"}
             for day, n in ((7, 3), (6, 4), (5, 5)) for i in range(n)]
    later = [{"merchant_id": "A", "opened_at": ts(1), "complainant_id": "late"}]
    got = (discount_complaints(complaints(usual + surge + later), policy, "UTC").collect()
           .with_columns(pl.col("opened_at").dt.date().alias("day")))
    flagged = got.filter(pl.col("is_surge"))
    assert flagged.height == 12  # all three days of the stretch, none of the usual or later ones
    assert flagged["complainant_id"].str.starts_with("angry").all()
    assert set(flagged["complaint_weight"]) == {policy.manipulation.surge_weight}

@settings(max_examples=25, deadline=None)
@given(extra_bad=st.integers(min_value=1, max_value=60), kind=st.sampled_from(["ret", "com", "late"]))
def test_more_bad_evidence_never_raises_the_score(extra_bad: int, kind: str) -> None:
    reg = registry({"merchant_id": "A"}, {"merchant_id": "B"})
    base_ret = [{"merchant_id": "B", "requested_at": ts(3), "reason": "quality_defect"}] * 5
    more = [{"merchant_id": "A", "requested_at": ts(2), "reason": "not_as_described"}] * extra_bad
    com = [{"merchant_id": "A", "opened_at": ts(2), "category": "quality"}] * extra_bad
    before = run_scores(reg, sales({"A": 60, "B": 60}), ret=returns(base_ret)).row(0, named=True)["score"]
    if kind == "ret":
        after = run_scores(reg, sales({"A": 60, "B": 60}), ret=returns(base_ret + more))
    elif kind == "com":
        after = run_scores(reg, sales({"A": 60, "B": 60}), ret=returns(base_ret), com=complaints(com))
    else:
        after = run_scores(reg, sales({"A": 60, "B": 60}, late={"A": min(extra_bad, 60)}), ret=returns(base_ret))
    assert after.row(0, named=True)["score"] <= before + 1e-9


def test_good_evidence_never_lowers_the_score() -> None:
    reg = registry({"merchant_id": "A"}, {"merchant_id": "B"})
    rev = [{"merchant_id": "A", "rating": 3, "created_at": ts(k)} for k in range(10)]
    base = run_scores(reg, sales({"A": 30, "B": 30}), rev=reviews(rev)).row(0, named=True)["score"]
    more_good = rev + [{"merchant_id": "A", "rating": 5, "created_at": ts(k), "text": f"great {k}"} for k in range(10)]
    better = run_scores(reg, sales({"A": 30, "B": 30}), rev=reviews(more_good)).row(0, named=True)["score"]
    assert better >= base


def test_shuffling_input_rows_changes_nothing() -> None:
    reg = registry({"merchant_id": "A"}, {"merchant_id": "B"}, {"merchant_id": "C", "category": "food"})
    rows = ([{"merchant_id": m, "requested_at": ts(k % 20), "reason": r}
             for k, (m, r) in enumerate([("A", "quality_defect"), ("B", "damaged"), ("C", "not_as_described")] * 9)])
    rev = [{"merchant_id": m, "rating": 1 + k % 5, "created_at": ts(k % 9), "text": f"t{k}"}
           for k, m in enumerate("ABCABCABCAB")]
    first = run_scores(reg, sales({"A": 30, "B": 20, "C": 10}), rev=reviews(rev), ret=returns(rows))
    random.Random(3).shuffle(rows)
    random.Random(4).shuffle(rev)
    second = run_scores(reg, sales({"A": 30, "B": 20, "C": 10}), rev=reviews(rev), ret=returns(rows))
    # Same values up to floating-point summation order.
    assert_frame_equal(first, second, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_window_filter_keeps_the_rows_of_the_join_it_replaced() -> None:
    day = date(2026, 3, 10)
    windows = pl.DataFrame({"merchant_id": ["A", "B", "C", None],
                            "window_start": [date(2026, 3, 5), date(2026, 3, 8), None, date(2026, 3, 1)]})
    rows = pl.DataFrame({
        "merchant_id": ["A", "B", "A", "B", "C", None, "Z", "A", "A", "B", "A"],
        "d": [date(2026, 3, k) if k else None for k in (5, 7, 4, 8, 9, 9, 9, 10, 11, 10, None)],
    }).with_row_index("i")
    joined = (rows.lazy().join(windows.lazy(), on="merchant_id", how="inner", maintain_order="left")
              .filter((pl.col("d") >= pl.col("window_start")) & (pl.col("d") <= day)).drop("window_start"))
    got = rows.lazy().filter(window_filter(windows, pl.col("d"), day))
    assert_frame_equal(got.collect(engine="in-memory"), joined.collect(engine="in-memory"))
    assert got.collect(engine="in-memory")["i"].to_list() == [0, 3, 7, 9]  # boundaries kept, in order
    assert rows.filter(window_filter(windows.clear(), pl.col("d"), day)).height == 0
