"""``row_reasons`` and ``apply_versions`` give the outputs of their original implementations.

Both were rewritten to hold less memory on a delivery day of millions of rows (issue 3.10):
the codes and statuses are now worked out on the few columns they need and each output is
taken from the rows once. The references below are verbatim copies of the functions as they
were before (docstrings left out). The frames mix every case: parse errors, suite failures,
unregistered merchants and merchants registered after the delivery day, same-day conflicts,
identical and differing re-deliveries within the batch and against earlier deliveries, rows
out of lineage order, and a versioned source beside the immutable one.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from transforms.schemas import SOURCES, Source
from transforms.validation import (
    LINEAGE_ORDER,
    ROW_ID,
    Outcome,
    apply_versions,
    describe,
    key_expr,
    keys_in,
    row_hash,
    row_reasons,
    version_columns,
)

REV = SOURCES["reviews"]
COM = SOURCES["complaints"]
D0 = date(2026, 3, 1)


def _reference_row_reasons(typed: pl.DataFrame, ge_failures: dict[str, list[int]],
                           known: pl.DataFrame | None) -> pl.DataFrame:
    pairs = [(rid, code) for code, ids in ge_failures.items() for rid in ids]
    ge = (pl.DataFrame(pairs, schema={ROW_ID: pl.Int64, "_code": pl.String}, orient="row")
          .group_by(ROW_ID).agg(pl.col("_code").alias("_ge")))
    out = typed.join(ge, on=ROW_ID, how="left")
    unknown: pl.Expr = pl.lit(False)
    if known is not None and "merchant_id" in typed.columns:
        out = out.join(known.rename({"merchant_id": "_m"}), left_on="merchant_id", right_on="_m", how="left")
        unknown = pl.col("merchant_id").is_not_null() & (
            pl.col("first_seen").is_null() | (pl.col("first_seen") > pl.col("_dt")))
    out = out.with_columns(unknown.alias("_unknown"))
    flagged = (pl.col("_parse_errors").list.len() > 0) | pl.col("_ge").is_not_null() | pl.col("_unknown")
    # Almost every row is clean: the list work below runs only on the few rows with a reason.
    clean = out.filter(~flagged).with_columns(pl.lit([], pl.List(pl.String)).alias("reason_codes"))
    dirty = out.filter(flagged).with_columns(
        pl.concat_list(pl.col("_parse_errors"), pl.col("_ge").fill_null(pl.lit([], pl.List(pl.String))),
                       pl.when(pl.col("_unknown")).then(pl.lit(["unknown_merchant"]))
                       .otherwise(pl.lit([], pl.List(pl.String))))
        .alias("_codes"))
    # A value that was present but unreadable is reported once, as unparseable, not also as missing.
    dirty = dirty.with_columns(
        pl.col("_codes").list.eval(
            pl.element().filter(~(
                pl.element().str.starts_with("missing_value:")
                & pl.element().str.replace("missing_value:", "unparseable:", literal=True)
                .is_in(pl.element().filter(pl.element().str.starts_with("unparseable:")).implode())
            ))
        ).list.unique().list.sort().alias("reason_codes")).drop("_codes")
    drop = ["_ge", "_unknown", *(["first_seen"] if "first_seen" in out.columns else [])]
    return pl.concat([clean, dirty], how="vertical").sort(ROW_ID).drop(drop)


def _reference_apply_versions(typed: pl.DataFrame, reasons: pl.DataFrame, prior: pl.LazyFrame | None,
                   source: Source) -> Outcome:
    del typed  # reasons already carries every typed column
    rows = reasons.with_columns(row_hash(source))
    invalid = rows.filter(pl.col("reason_codes").list.len() > 0)
    valid = rows.filter(pl.col("reason_codes").list.len() == 0)
    key = list(source.key)
    cols = version_columns(source)
    if prior is not None and source.name != "merchants":
        # Only earlier deliveries of this batch's ids can matter (the registry keeps its full
        # history: first_seen needs it).
        prior = prior.select(cols).filter(keys_in(key, valid.select(key).unique()))
    prior_df = (prior.select(cols).collect(engine="in-memory") if prior is not None
                else pl.DataFrame(schema={c: valid.schema[c] for c in cols}))
    combined = pl.concat([prior_df.with_columns(pl.lit(-1, pl.Int64).alias(ROW_ID)),
                          valid.select(*cols, ROW_ID)], how="vertical")
    # Ids seen once (nearly all) are accepted as they are; the ordered window logic runs on the rest.
    group = key if source.versioning == "immutable" else [*key, "_row_hash"]
    repeated = key_expr(group).is_duplicated()
    single = combined.filter(~repeated & (pl.col(ROW_ID) >= 0)).select(
        ROW_ID, pl.lit("accepted").alias("_status"))
    combined = combined.filter(repeated).sort(LINEAGE_ORDER)
    if source.versioning == "immutable":
        combined = combined.with_columns(
            pl.col("_row_hash").first().over(key).alias("_origin_hash"),
            pl.col("_dt").first().over(key).alias("_origin_dt"),
            (pl.int_range(pl.len()).over(key) == 0).alias("_is_first"),
        ).with_columns(
            ((pl.col("_dt") == pl.col("_origin_dt")) & (pl.col("_row_hash") != pl.col("_origin_hash")))
            .any().over(key).alias("_same_day_conflict"))
        new = combined.filter(pl.col(ROW_ID) >= 0)
        conflict = (~pl.col("_is_first") & (pl.col("_row_hash") != pl.col("_origin_hash"))) | (
            pl.col("_same_day_conflict") & (pl.col("_dt") == pl.col("_origin_dt")))
        dup = ~pl.col("_is_first") & (pl.col("_row_hash") == pl.col("_origin_hash")) & ~conflict
        status = new.select(ROW_ID, pl.when(conflict).then(pl.lit("conflict")).when(dup).then(pl.lit("duplicate"))
                            .otherwise(pl.lit("accepted")).alias("_status"))
    else:
        combined = combined.with_columns((pl.int_range(pl.len()).over([*key, "_row_hash"]) > 0).alias("_dup"))
        status = combined.filter(pl.col(ROW_ID) >= 0).select(
            ROW_ID, pl.when(pl.col("_dup")).then(pl.lit("duplicate")).otherwise(pl.lit("accepted")).alias("_status"))
    status = pl.concat([single, status], how="vertical")
    valid = valid.join(status, on=ROW_ID, how="left")
    conflicts = valid.filter(pl.col("_status") == "conflict").with_columns(
        pl.lit(["conflicting_duplicate"]).alias("reason_codes"))
    quarantined = pl.concat([invalid, conflicts.drop("_status")], how="vertical").with_columns(
        pl.col("reason_codes").list.eval(pl.element().map_elements(describe, return_dtype=pl.String))
        .alias("reasons"))
    accepted = valid.filter(pl.col("_status") == "accepted").drop("_status")
    duplicates = valid.filter(pl.col("_status") == "duplicate").drop("_status")
    keep = [*source.names, *LINEAGE_ORDER, "_row_hash"]
    accepted = accepted.select(keep).sort(LINEAGE_ORDER)
    first_seen = None
    if source.name == "merchants":
        seen = pl.concat([prior_df.select("merchant_id", "_dt"), accepted.select("merchant_id", "_dt")])
        first_seen = seen.group_by("merchant_id").agg(pl.col("_dt").min().alias("first_seen"))
    unaccepted = valid.filter(pl.col("_status") != "accepted").select(cols)
    return Outcome(accepted=accepted, quarantined=quarantined, duplicates=duplicates, first_seen=first_seen,
                   all_rows=reasons.select("_dt"), unaccepted=unaccepted)


def _reviews(rng: random.Random, n: int, ids: int) -> pl.DataFrame:
    # Most copies of an id carry the same values (identical re-deliveries), some differ (conflicts).
    numbers = [rng.randrange(ids) for _ in range(n)]
    return pl.DataFrame({
        "review_id": [f"R{i}" for i in numbers],
        "merchant_id": [["M1", "M2", "M3", "GHOST", None][i % 5] for i in numbers],
        "order_id": [None] * n, "reviewer_id": ["p_x"] * n,
        "rating": [(1 if i % 2 else 5) if rng.random() < 0.8 else 3 for i in numbers],
        "text": [[None, "ok", "bad"][i % 3] for i in numbers],
        "created_at": [None] * n, "verified_purchase": [True] * n,
        "_parse_errors": [rng.choice([[], [], [], ["unparseable:rating"], ["unparseable:created_at"]])
                          for _ in range(n)],
        "_dt": [D0 + timedelta(days=rng.randrange(3)) for _ in range(n)],
        "_file": [rng.choice(["a.csv", "b.csv"]) for _ in range(n)],
        "_row_number": list(range(1, n + 1)),
    }, schema_overrides={"order_id": pl.String, "text": pl.String, "created_at": pl.Datetime("us", "UTC"),
                         "_parse_errors": pl.List(pl.String)})


def _complaints(rng: random.Random, n: int, ids: int) -> pl.DataFrame:
    from datetime import UTC, datetime

    frame = pl.DataFrame({c.name: [None] * n for c in COM.columns}, schema=COM.polars_schema())
    return frame.with_columns(
        pl.Series("complaint_id", [f"C{rng.randrange(ids)}" for _ in range(n)]),
        pl.Series("merchant_id", [rng.choice(["M1", "M2", None]) for _ in range(n)]),
        pl.Series("status", [rng.choice(["open", "resolved"]) for _ in range(n)]),
        pl.Series("updated_at", [datetime(2026, 3, 1, rng.randrange(3), tzinfo=UTC) for _ in range(n)]),
        pl.Series("_parse_errors", [rng.choice([[], [], ["unparseable:opened_at"]]) for _ in range(n)],
                  dtype=pl.List(pl.String)),
        pl.Series("_dt", [D0 + timedelta(days=rng.randrange(3)) for _ in range(n)]),
        pl.Series("_file", [rng.choice(["a.csv", "b.csv"]) for _ in range(n)]),
        pl.Series("_row_number", list(range(1, n + 1))),
    )


def _numbered(frame: pl.DataFrame, shuffle: random.Random | None) -> pl.DataFrame:
    frame = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_ID))
    return frame.sample(fraction=1.0, shuffle=True, seed=shuffle.randrange(1000)) if shuffle else frame


def _by_row(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(ROW_ID) if ROW_ID in frame.columns else frame.sort(LINEAGE_ORDER)


@pytest.mark.parametrize("seed", range(12))
def test_row_reasons_equals_the_original(seed: int) -> None:
    rng = random.Random(seed)
    typed = _numbered(_reviews(rng, 60, 25), rng if seed % 2 else None)
    failures = {"out_of_range:rating": sorted(rng.sample(range(60), 8)),
                "missing_value:created_at": sorted(rng.sample(range(60), 20))}
    known = pl.DataFrame({"merchant_id": ["M1", "M2", "M3"], "first_seen": [D0, D0 + timedelta(days=1), D0]})
    for k in (known, None):
        assert_frame_equal(row_reasons(typed, failures, k), _reference_row_reasons(typed, failures, k),
                           check_exact=True)


def _prior(rng: random.Random, source: Source, make: object) -> pl.DataFrame:
    earlier = make(rng, 30, 25).with_columns(pl.col("_dt") - pl.duration(days=5))  # type: ignore[operator]
    earlier = earlier.filter(pl.col("_parse_errors").list.len() == 0).with_columns(row_hash(source))
    return earlier.select(version_columns(source)).unique(LINEAGE_ORDER, keep="first")


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("source", ["reviews", "complaints"])
def test_apply_versions_equals_the_original(seed: int, source: str) -> None:
    rng = random.Random(seed)
    spec, make = (REV, _reviews) if source == "reviews" else (COM, _complaints)
    typed = _numbered(make(rng, 80, 30), rng if seed % 2 else None)
    reasons = row_reasons(typed, {"out_of_range:rating": sorted(rng.sample(range(80), 5))}, None)
    prior = _prior(rng, spec, make).lazy() if seed % 3 else None
    new: Outcome = apply_versions(typed, reasons, prior, spec)
    old: Outcome = _reference_apply_versions(typed, reasons, prior, spec)
    assert_frame_equal(new.accepted, old.accepted, check_exact=True)  # in lineage order, both
    for got, want in ((new.quarantined, old.quarantined), (new.duplicates, old.duplicates),
                      (new.unaccepted, old.unaccepted)):
        assert got is not None
        assert want is not None
        assert_frame_equal(_by_row(got), _by_row(want), check_exact=True)
    assert_frame_equal(new.all_rows, old.all_rows, check_exact=True)
    # The new order is defined: invalid rows, then conflicts, each in row order.
    q = new.quarantined
    conflict = q.get_column("reason_codes").list.first() == "conflicting_duplicate"
    assert q.filter(~conflict).get_column(ROW_ID).is_sorted()
    assert q.filter(conflict).get_column(ROW_ID).is_sorted()
    assert not conflict.head(int((~conflict).sum())).any()


def test_apply_versions_of_the_registry_equals_the_original() -> None:
    merchants = SOURCES["merchants"]
    frame = pl.DataFrame({c.name: [None] * 6 for c in merchants.columns}, schema=merchants.polars_schema())
    frame = frame.with_columns(
        pl.Series("merchant_id", ["M1", "M2", "M1", "M3", "M2", "M1"]),
        pl.Series("name", ["a", "b", "a", "c", "B", "a"]),
        pl.Series("_parse_errors", [[]] * 6, dtype=pl.List(pl.String)),
        pl.Series("_dt", [D0, D0, D0 + timedelta(days=1), D0 + timedelta(days=1), D0 + timedelta(days=2),
                          D0 + timedelta(days=2)]),
        pl.Series("_file", ["m.csv"] * 6), pl.Series("_row_number", [1, 2, 1, 2, 1, 2]),
    ).with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_ID))
    reasons = row_reasons(frame, {}, None)
    new, old = apply_versions(frame, reasons, None, merchants), _reference_apply_versions(frame, reasons, None,
                                                                                            merchants)
    assert_frame_equal(new.accepted, old.accepted, check_exact=True)
    assert new.first_seen is not None
    assert old.first_seen is not None
    assert_frame_equal(new.first_seen.sort("merchant_id"), old.first_seen.sort("merchant_id"), check_exact=True)
