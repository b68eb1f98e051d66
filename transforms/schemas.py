"""Column definitions of the landing sources and the Arrow schemas of every output.

This module is the single statement of *shape*: staging types landing columns to
these kinds, validation derives its rules from them, and :mod:`transforms.lake`
writes outputs with these Arrow schemas so consumers see stable types and order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl
import pyarrow as pa

Kind = Literal["string", "int", "float", "bool", "date", "timestamp"]

SCHEMA_VERSION = "1.0.0"

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TEXT_MAX_CHARS = 10_000


@dataclass(frozen=True)
class Column:
    """One landing column: its kind, whether it is required and its domain."""

    name: str
    kind: Kind
    required: bool = True
    domain: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    pattern: str | None = None
    max_chars: int | None = None
    personal: bool = False


@dataclass(frozen=True)
class Source:
    """A landing source: its columns, natural key and versioning rule."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    #: ``immutable``: a key is delivered once (re-deliveries are duplicates, a differing
    #: re-delivery is a conflict). ``versioned``: newer versions supersede older ones.
    versioning: Literal["immutable", "versioned"]
    #: Column ordering versions of one key (after the delivery day).
    version_column: str | None = None
    #: Column giving the business day an event belongs to (for windows).
    event_column: str | None = None
    #: Pairs (later, earlier): ``later`` must not be before ``earlier`` (both non-null).
    ordered_pairs: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    #: Pairs (small, large): ``small`` must not exceed ``large``.
    bounded_pairs: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def polars_schema(self) -> dict[str, pl.DataType]:
        """Polars dtypes of the staged (typed) columns."""
        return {c.name: POLARS_KIND[c.kind] for c in self.columns}


POLARS_KIND: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "timestamp": pl.Datetime("us", "UTC"),
}

ARROW_KIND: dict[str, pa.DataType] = {
    "string": pa.large_string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

_ID = {"pattern": ID_PATTERN}

SOURCES: dict[str, Source] = {
    "merchants": Source(
        name="merchants",
        columns=(
            Column("merchant_id", "string", **_ID),  # type: ignore[arg-type]
            Column("name", "string", max_chars=1000),
            Column("category", "string", pattern=r"^\S(?:.*\S)?$"),
            Column("registered_on", "date"),
            Column("license_expires_on", "date", required=False),
            Column("status", "string", domain=("active", "suspended", "closed")),
        ),
        key=("merchant_id",),
        versioning="versioned",
    ),
    "sales": Source(
        name="sales",
        columns=(
            Column("merchant_id", "string", **_ID),  # type: ignore[arg-type]
            Column("date", "date"),
            Column("orders", "int", min_value=0),
            Column("late_shipments", "int", min_value=0),
            Column("cancellations", "int", min_value=0),
        ),
        key=("merchant_id", "date"),
        versioning="versioned",
        event_column="date",
        bounded_pairs=(("late_shipments", "orders"), ("cancellations", "orders")),
    ),
    "reviews": Source(
        name="reviews",
        columns=(
            Column("review_id", "string", **_ID),  # type: ignore[arg-type]
            Column("merchant_id", "string", **_ID),  # type: ignore[arg-type]
            Column("order_id", "string", required=False),
            Column("reviewer_id", "string", personal=True),
            Column("rating", "int", min_value=1, max_value=5),
            Column("text", "string", required=False, max_chars=TEXT_MAX_CHARS),
            Column("created_at", "timestamp"),
            Column("verified_purchase", "bool"),
        ),
        key=("review_id",),
        versioning="immutable",
        event_column="created_at",
    ),
    "complaints": Source(
        name="complaints",
        columns=(
            Column("complaint_id", "string", **_ID),  # type: ignore[arg-type]
            Column("merchant_id", "string", **_ID),  # type: ignore[arg-type]
            Column("order_id", "string", required=False),
            Column("complainant_id", "string", personal=True),
            Column("category", "string",
                   domain=("quality", "not_as_described", "after_sales", "logistics", "counterfeit", "other")),
            Column("channel", "string", domain=("app", "hotline", "email", "regulator", "court")),
            Column("opened_at", "timestamp"),
            Column("first_response_at", "timestamp", required=False),
            Column("resolved_at", "timestamp", required=False),
            Column("status", "string", domain=("open", "resolved", "rejected", "escalated")),
            Column("text", "string", required=False, max_chars=TEXT_MAX_CHARS),
            Column("updated_at", "timestamp", required=False),
        ),
        key=("complaint_id",),
        versioning="versioned",
        version_column="updated_at",
        event_column="opened_at",
        ordered_pairs=(("first_response_at", "opened_at"), ("resolved_at", "opened_at")),
    ),
    "returns": Source(
        name="returns",
        columns=(
            Column("return_id", "string", **_ID),  # type: ignore[arg-type]
            Column("merchant_id", "string", **_ID),  # type: ignore[arg-type]
            Column("order_id", "string"),
            Column("requested_at", "timestamp"),
            Column("reason", "string",
                   domain=("quality_defect", "not_as_described", "damaged", "wrong_item", "changed_mind", "other")),
            Column("status", "string", domain=("requested", "approved", "rejected", "refunded")),
            Column("refund_amount", "float", required=False, min_value=0),
            Column("resolved_at", "timestamp", required=False),
            Column("updated_at", "timestamp", required=False),
        ),
        key=("return_id",),
        versioning="versioned",
        version_column="updated_at",
        event_column="requested_at",
        ordered_pairs=(("resolved_at", "requested_at"),),
    ),
}

SOURCE_NAMES: tuple[str, ...] = tuple(SOURCES)

#: Bookkeeping columns every staged row carries (never shown to consumers as data).
LINEAGE = {
    "_dt": pl.Date(),            # delivery day (landing partition)
    "_file": pl.String(),        # landing file, relative to the root
    "_row_number": pl.Int64(),   # 1-based data row within the file
}

QUARANTINE_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("dt", pa.date32(), nullable=False),
    pa.field("file", pa.string(), nullable=False),
    pa.field("row_number", pa.int64(), nullable=False),
    pa.field("reason_codes", pa.list_(pa.string()), nullable=False),
    pa.field("reasons", pa.list_(pa.string()), nullable=False),
    pa.field("original", pa.string(), nullable=False),   # JSON of the row as delivered (PII hashed)
    pa.field("quarantined_on", pa.date32(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
])


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


_RATE_FIELDS: list[pa.Field] = []
for _d, _num in (("quality", "quality_defect_count"), ("description", "description_mismatch_count"),
                 ("after_sales", "after_sales_failure_count"), ("fulfilment", "fulfilment_failure_count")):
    _RATE_FIELDS += [
        _f(f"{_d}_score", pa.float64(), False),
        _f(_num, pa.int64(), False),
        _f(f"{_d}_exposure_count", pa.int64(), False),
        _f(f"{_d}_rate", pa.float64()),
        _f(f"{_d}_rate_shrunk", pa.float64(), False),
        _f(f"{_d}_rate_ci_low", pa.float64(), False),
        _f(f"{_d}_rate_ci_high", pa.float64(), False),
        _f(f"{_d}_category_rate", pa.float64(), False),
        _f(f"{_d}_category_percentile", pa.float64(), False),
    ]

#: Published scores: one row per merchant in the registry as of score_date.
SCORES_SCHEMA = pa.schema([
    _f("merchant_id", pa.string(), False),
    _f("score_date", pa.date32(), False),
    _f("score", pa.float64(), False),
    _f("tier", pa.string(), False),
    _f("raw_tier", pa.string(), False),
    _f("reason_codes", pa.list_(pa.string()), False),
    _f("reason_details", pa.list_(pa.string()), False),
    _f("reason_points", pa.list_(pa.float64()), False),
    _f("policy_version", pa.string(), False),
    _f("run_id", pa.string(), False),
    _f("category", pa.string(), False),
    _f("status", pa.string(), False),
    _f("is_sufficient_evidence", pa.bool_(), False),
    _f("evidence_confidence", pa.float64(), False),
    _f("window_days", pa.int32(), False),
    _f("window_start", pa.date32(), False),
    _f("orders_count", pa.int64(), False),
    *_RATE_FIELDS,
    _f("late_shipment_count", pa.int64(), False),
    _f("cancellation_count", pa.int64(), False),
    _f("return_count", pa.int64(), False),
    _f("defect_return_count", pa.int64(), False),
    _f("nad_return_count", pa.int64(), False),
    _f("rejected_return_count", pa.int64(), False),
    _f("return_resolution_hours_median", pa.float64()),
    _f("complaint_count", pa.int64(), False),
    _f("complainant_distinct_count", pa.int64(), False),
    _f("quality_complaint_count", pa.int64(), False),
    _f("nad_complaint_count", pa.int64(), False),
    _f("resolved_complaint_count", pa.int64(), False),
    _f("unresolved_past_deadline_count", pa.int64(), False),
    _f("no_timely_response_count", pa.int64(), False),
    _f("escalated_complaint_count", pa.int64(), False),
    _f("first_response_hours_median", pa.float64()),
    _f("first_response_hours_p90", pa.float64()),
    _f("satisfaction_score", pa.float64(), False),
    _f("review_count", pa.int64(), False),
    _f("verified_review_count", pa.int64(), False),
    _f("low_rating_count", pa.int64(), False),
    _f("mismatch_review_count", pa.int64(), False),
    _f("rating_mean_raw", pa.float64()),
    _f("rating_bayes_mean", pa.float64(), False),
    _f("category_rating_mean", pa.float64(), False),
    _f("discounted_review_count", pa.int64(), False),
    _f("discount_reasons", pa.list_(pa.string()), False),
    _f("surge_complaint_count", pa.int64(), False),
    _f("compliance_score", pa.float64(), False),
    _f("licence_state", pa.string(), False),
    _f("is_regulated_category", pa.bool_(), False),
    _f("tenure_days", pa.int32(), False),
    # Enforcement (transforms.enforcement): the optimistic score, the tier the evidence points to,
    # the tier in force and what automation proposed, hard rules and the signals behind the guards.
    _f("score_upper", pa.float64(), False),
    _f("evidence_tier", pa.string()),
    _f("enforced_tier", pa.string(), False),
    _f("proposed_tier", pa.string(), False),
    _f("hard_rules", pa.list_(pa.string()), False),
    _f("automation_hold", pa.string()),
    _f("is_collective_complaint", pa.bool_(), False),
    _f("complaint_recent_count", pa.int64(), False),
    _f("complainant_recent_distinct_count", pa.int64(), False),
    _f("complaint_recent_expected", pa.float64(), False),
    _f("quality_affected_buyer_count", pa.int64(), False),
    _f("description_affected_buyer_count", pa.int64(), False),
])

#: The enforcement feed: one row per merchant whose enforcement state changes on score_date.
ACTIONS_SCHEMA = pa.schema([
    _f("merchant_id", pa.string(), False),
    _f("score_date", pa.date32(), False),
    _f("action", pa.string(), False),
    _f("from_tier", pa.string()),
    _f("to_tier", pa.string(), False),
    _f("reason_codes", pa.list_(pa.string()), False),
    _f("statement", pa.string(), False),
    _f("effective_on", pa.date32(), False),
    _f("score", pa.float64(), False),
    _f("is_automated", pa.bool_(), False),
    _f("appeal_until", pa.date32(), False),
    _f("policy_version", pa.string(), False),
    _f("run_id", pa.string(), False),
    _f("score_upper", pa.float64(), False),
    _f("notice_days", pa.int32(), False),
])


#: Enforcement state carried from day to day: one row per merchant after score_date.
ENFORCEMENT_STATE_SCHEMA = pa.schema([
    _f("merchant_id", pa.string(), False),
    _f("score_date", pa.date32(), False),
    _f("state", pa.string(), False),
    _f("since", pa.date32(), False),
    _f("policy_version", pa.string(), False),
    _f("run_id", pa.string(), False),
    _f("enforced_tier", pa.string(), False),          # ladder tier in force (kept while evidence is insufficient)
    _f("days_in_state", pa.int32(), False),
    _f("last_escalated_on", pa.date32()),
    _f("effective_on", pa.date32()),                  # when the last change takes effect (notice periods)
    _f("evidence_tier", pa.string()),                 # tier the evidence pointed to (guard reference)
    _f("score_upper", pa.float64()),
    _f("hard_rules", pa.list_(pa.string()), False),   # hard rules in force (for their release hysteresis)
    _f("improve_streak", pa.int32(), False),          # consecutive runs the evidence supported a better tier
    _f("collective_hold_until", pa.date32()),         # human review of a complaint surge pending until
    _f("guard_hold_since", pa.date32()),              # escalation frozen by the blast-radius guard since
])
