"""Small inline marketplaces for scoring tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from transforms.aggregates import review_day_aggregates
from transforms.manipulation import discount_complaints, discount_reviews
from transforms.policy import Policy, load_policy
from transforms.scoring import ScoringInputs, compute_evidence, score_merchants

DAY = date(2026, 3, 31)
TZ = "UTC"


def registry(*rows: dict[str, Any]) -> pl.LazyFrame:
    base = {"name": "n", "category": "electronics", "registered_on": date(2024, 1, 1),
            "license_expires_on": date(2028, 1, 1), "status": "active"}
    return pl.DataFrame([base | r for r in rows], schema={
        "merchant_id": pl.String, "name": pl.String, "category": pl.String, "registered_on": pl.Date,
        "license_expires_on": pl.Date, "status": pl.String}).lazy()


def sales(orders: dict[str, int], days: int = 30, late: dict[str, int] | None = None) -> pl.LazyFrame:
    late = late or {}
    rows = [{"merchant_id": m, "date": DAY - timedelta(days=k), "orders": n,
             "late_shipments": late.get(m, 0), "cancellations": 0}
            for m, n in orders.items() for k in range(days)]
    return pl.DataFrame(rows, schema={"merchant_id": pl.String, "date": pl.Date, "orders": pl.Int64,
                                      "late_shipments": pl.Int64, "cancellations": pl.Int64}).lazy()


def ts(days_ago: int, hour: int = 10) -> datetime:
    d = DAY - timedelta(days=days_ago)
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


REVIEW_SCHEMA = {"review_id": pl.String, "merchant_id": pl.String, "reviewer_id": pl.String, "rating": pl.Int64,
                 "text": pl.String, "created_at": pl.Datetime("us", "UTC"), "verified_purchase": pl.Boolean}
COMPLAINT_SCHEMA = {"complaint_id": pl.String, "merchant_id": pl.String, "complainant_id": pl.String,
                    "category": pl.String, "channel": pl.String, "opened_at": pl.Datetime("us", "UTC"),
                    "first_response_at": pl.Datetime("us", "UTC"), "resolved_at": pl.Datetime("us", "UTC"),
                    "status": pl.String}
RETURN_SCHEMA = {"return_id": pl.String, "merchant_id": pl.String, "requested_at": pl.Datetime("us", "UTC"),
                 "reason": pl.String, "status": pl.String, "resolved_at": pl.Datetime("us", "UTC")}


def reviews(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    base = {"reviewer_id": "u", "text": "ok", "verified_purchase": True}
    full = [base | {"review_id": f"R{i}"} | r for i, r in enumerate(rows)]
    return pl.DataFrame(full, schema=REVIEW_SCHEMA).lazy()


def complaints(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    base = {"complainant_id": "c", "channel": "app", "first_response_at": None, "resolved_at": None,
            "status": "open", "category": "quality"}
    full = [base | {"complaint_id": f"C{i}"} | r for i, r in enumerate(rows)]
    return pl.DataFrame(full, schema=COMPLAINT_SCHEMA).lazy()


def returns(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    base = {"status": "refunded", "resolved_at": None, "reason": "changed_mind"}
    full = [base | {"return_id": f"T{i}"} | r for i, r in enumerate(rows)]
    return pl.DataFrame(full, schema=RETURN_SCHEMA).lazy()


def run_scores(reg: pl.LazyFrame, sal: pl.LazyFrame, rev: pl.LazyFrame | None = None,
               com: pl.LazyFrame | None = None, ret: pl.LazyFrame | None = None,
               policy: Policy | None = None) -> pl.DataFrame:
    policy = policy or load_policy()
    raw = rev if rev is not None else reviews([])
    rev = discount_reviews(review_day_aggregates(raw, policy, TZ), policy, TZ)
    com = discount_complaints(com if com is not None else complaints([]), policy, TZ)
    inputs = ScoringInputs(reg, sal, rev, com, ret if ret is not None else returns([]))
    end = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + timedelta(days=1)
    ev = compute_evidence(inputs, DAY, end, policy, TZ)
    return score_merchants(ev, DAY, policy).collect(engine="in-memory").sort("merchant_id")
