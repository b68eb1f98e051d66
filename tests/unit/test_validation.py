"""Row reasons, duplicates, conflicts and versions on small inline frames."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from transforms.schemas import SOURCES, Source
from transforms.validation import (
    apply_versions,
    current_versions,
    keys_in,
    row_reasons,
    superseded_by_day,
    version_columns,
    version_order,
)

REV = SOURCES["reviews"]
COM = SOURCES["complaints"]
D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
D3, D4 = date(2026, 3, 3), date(2026, 3, 4)


def _reviews(rows: list[tuple[str, int, date, int]]) -> pl.DataFrame:
    """(review_id, rating, dt, row_number) rows with every other column fixed."""
    return pl.DataFrame({
        "review_id": [r[0] for r in rows], "merchant_id": ["M1"] * len(rows), "order_id": [None] * len(rows),
        "reviewer_id": ["p_x"] * len(rows), "rating": [r[1] for r in rows], "text": [None] * len(rows),
        "created_at": [None] * len(rows), "verified_purchase": [True] * len(rows),
        "_parse_errors": [[] for _ in rows], "_dt": [r[2] for r in rows], "_file": ["f.csv"] * len(rows),
        "_row_number": [r[3] for r in rows],
    }, schema_overrides={"order_id": pl.String, "text": pl.String, "created_at": pl.Datetime("us", "UTC"),
                         "_parse_errors": pl.List(pl.String)}).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row_id"))


def test_reasons_merge_parse_errors_suite_failures_and_registry() -> None:
    df = _reviews([("R1", 5, D1, 1), ("R2", 9, D1, 2), ("R3", 5, D1, 3)]).with_columns(
        pl.Series("_parse_errors", [["unparseable:created_at"], [], []]),
        pl.Series("merchant_id", ["M1", "M1", "GHOST"]))
    known = pl.DataFrame({"merchant_id": ["M1"], "first_seen": [D1]})
    out = row_reasons(df, {"out_of_range:rating": [1], "missing_value:created_at": [0, 1, 2]}, known)
    codes = out["reason_codes"].to_list()
    # A value that was present but unreadable is not also reported as missing.
    assert codes[0] == ["unparseable:created_at"]
    assert codes[1] == ["missing_value:created_at", "out_of_range:rating"]
    assert codes[2] == ["missing_value:created_at", "unknown_merchant"]


def test_merchant_registered_after_the_delivery_day_is_unknown_then() -> None:
    df = _reviews([("R1", 5, D1, 1)])
    known = pl.DataFrame({"merchant_id": ["M1"], "first_seen": [D2]})
    assert row_reasons(df, {}, known)["reason_codes"][0].to_list() == ["unknown_merchant"]


def _outcome(batch: pl.DataFrame, prior: pl.DataFrame | None = None) -> tuple[list[str], list[str], list[str]]:
    reasons = row_reasons(batch, {}, None)
    out = apply_versions(batch, reasons, prior.lazy() if prior is not None else None, REV)
    key = lambda f: sorted(f"{r}@{n}" for r, n in zip(f["review_id"], f["_row_number"], strict=True))  # noqa: E731
    return key(out.accepted), key(out.duplicates), key(out.quarantined)


def test_identical_redelivery_is_a_duplicate_and_a_differing_one_a_conflict() -> None:
    day1 = _reviews([("R1", 5, D1, 1), ("R2", 4, D1, 2)])
    acc, dup, quar = _outcome(day1)
    assert (acc, dup, quar) == (["R1@1", "R2@2"], [], [])
    prior = apply_versions(day1, row_reasons(day1, {}, None), None, REV).accepted
    day2 = _reviews([("R1", 5, D2, 1), ("R2", 1, D2, 2), ("R3", 3, D2, 3)])
    acc, dup, quar = _outcome(day2, prior)
    assert acc == ["R3@3"]
    assert dup == ["R1@1"]
    assert quar == ["R2@2"]  # the first delivery of R2 stays accepted: reviews are never deleted


def test_two_different_rows_with_one_id_on_the_same_day_are_both_quarantined() -> None:
    acc, _dup, quar = _outcome(_reviews([("R1", 5, D1, 1), ("R1", 1, D1, 2), ("R1", 5, D1, 3)]))
    assert acc == []
    assert quar == ["R1@1", "R1@2", "R1@3"]


def test_newest_complaint_version_wins_by_updated_at_then_delivery() -> None:
    from datetime import UTC, datetime

    df = pl.DataFrame({
        "complaint_id": ["C1", "C1", "C1", "C2"], "status": ["open", "resolved", "escalated", "open"],
        "updated_at": [datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC),
                       datetime(2026, 3, 2, tzinfo=UTC), None],
        "_dt": [D1, D2, D2, D1], "_file": ["a", "a", "b", "a"], "_row_number": [1, 1, 1, 2],
    })
    cur = current_versions(df.lazy(), COM).collect().sort("complaint_id")
    assert cur["status"].to_list() == ["resolved", "open"]


def _status(out_accepted: pl.DataFrame, out_dup: pl.DataFrame, out_quar: pl.DataFrame) -> dict[str, list[str]]:
    key = lambda f: sorted(f"{r}@{d}/{n}" for r, d, n in zip(f["review_id"], f["_dt"], f["_row_number"],  # noqa: E731
                                                             strict=True))
    return {"accepted": key(out_accepted), "duplicate": key(out_dup), "quarantined": key(out_quar)}


def test_versioning_day_batches_in_order_equals_one_pass_over_every_day() -> None:
    """validate() of a full recompute works on batches of delivery days; the outcome must not change.

    Each batch sees, as earlier deliveries, the accepted rows of earlier batches (their staged
    partitions) and their valid rows that were not accepted (``Outcome.unaccepted``).
    """
    rows = _reviews([
        ("R1", 5, D1, 1), ("R1", 1, D1, 2),            # same-day conflict: both quarantined ...
        ("R1", 5, D3, 1),                              # ... so a later copy is a duplicate of the origin
        ("R2", 4, D1, 3), ("R2", 4, D2, 1), ("R2", 2, D4, 1),  # accepted, duplicate, conflict
        ("R3", 3, D2, 2), ("R3", 1, D3, 2), ("R3", 3, D4, 2),  # accepted, conflict, duplicate
        ("R4", 5, D4, 3), ("R5", 2, D2, 3), ("R5", 2, D2, 4),  # new; same-day identical copy
    ])
    whole = apply_versions(rows, row_reasons(rows, {}, None), None, REV)
    expected = _status(whole.accepted, whole.duplicates, whole.quarantined)
    for batches in ([[D1], [D2], [D3], [D4]], [[D1, D2], [D3, D4]], [[D1], [D2, D3, D4]]):
        accepted, dup, quar, unaccepted = [], [], [], []
        for days in batches:
            batch = rows.filter(pl.col("_dt").is_in(days)).with_columns(
                pl.int_range(pl.len(), dtype=pl.Int64).alias("_row_id"))
            earlier = [f.select(version_columns(REV)) for f in accepted + unaccepted]
            prior = pl.concat(earlier).lazy() if earlier else None
            out = apply_versions(batch, row_reasons(batch, {}, None), prior, REV)
            accepted.append(out.accepted)
            dup.append(out.duplicates)
            quar.append(out.quarantined)
            assert out.unaccepted is not None
            unaccepted.append(out.unaccepted)
        got = _status(pl.concat(accepted), pl.concat(dup), pl.concat(quar))
        assert got == expected, batches
    assert expected["quarantined"] == ["R1@2026-03-01/1", "R1@2026-03-01/2", "R2@2026-03-04/1", "R3@2026-03-03/2"]


def _ranked_superseded(staged: pl.DataFrame, spec: Source) -> dict[date, int]:
    """The reference count: rank every version of every key, oldest first, and count all but the newest."""
    key = list(spec.key)
    ref = (staged.sort(version_order(spec), nulls_last=False, maintain_order=True)
           .with_columns((pl.int_range(pl.len()).over(key) < pl.len().over(key) - 1).alias("_old"))
           .group_by("_dt").agg(pl.col("_old").sum()))
    return {d: n for d, n in ref.iter_rows() if n}


def test_superseded_counts_only_repeated_keys() -> None:
    from datetime import UTC, datetime

    staged = pl.DataFrame({
        "complaint_id": ["C1", "C1", "C1", "C2", "C3", "C3"],
        "updated_at": [datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC),
                       datetime(2026, 3, 2, tzinfo=UTC), None, None, datetime(2026, 3, 1, tzinfo=UTC)],
        "_dt": [D1, D2, D2, D1, D1, D3], "_file": ["a", "a", "b", "a", "a", "a"], "_row_number": [1, 1, 1, 2, 3, 1],
    })
    got = dict(superseded_by_day(staged.lazy(), COM).iter_rows())
    assert {d: n for d, n in got.items() if n} == _ranked_superseded(staged, COM) == {D1: 2, D2: 1}


def test_superseded_counts_are_the_same_in_hash_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Splitting the keys into passes (bounded memory) must not change a day's count."""
    import random
    from datetime import UTC, datetime, timedelta

    from transforms import validation

    rng = random.Random(5)
    sales, complaints = [], []
    for i in range(400):
        day = D1 + timedelta(days=rng.randrange(4))
        upd = None if rng.random() < 0.2 else datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=rng.randrange(6))
        lineage = {"_dt": day, "_file": rng.choice("ab"), "_row_number": i}
        sales.append({"merchant_id": f"M{rng.randrange(15)}", "date": D1 - timedelta(days=rng.randrange(3)),
                      "updated_at": upd} | lineage)
        complaints.append({"complaint_id": f"C{rng.randrange(120)}", "updated_at": upd} | lineage)
    for spec, rows in ((SOURCES["sales"], sales), (COM, complaints)):
        staged = pl.DataFrame(rows).select(*spec.key, *version_order(spec)).lazy()
        one_pass = superseded_by_day(staged, spec)
        monkeypatch.setattr(validation, "SUPERSEDED_PASS_ROWS", 37)  # 11 passes
        assert superseded_by_day(staged, spec).equals(one_pass)
        monkeypatch.undo()
        assert dict(one_pass.iter_rows()) == _ranked_superseded(staged.collect(), spec)
        assert one_pass["superseded"].sum() > 50


def test_keys_in_with_its_bounds_matches_a_semi_join(tmp_path: Path) -> None:
    """keys_in adds each key column's bounds (for Parquet statistics) without changing which rows match."""
    days = [date(2026, 1, 1) + timedelta(days=i % 40) for i in range(4000)]
    history = pl.DataFrame({"merchant_id": [f"M{i % 97:03d}" for i in range(4000)], "date": days,
                            "review_id": [f"R{i:05d}" for i in range(4000)], "n": list(range(4000))})
    path = tmp_path / "history.parquet"
    history.sort("date").write_parquet(path, row_group_size=100)
    wanted = pl.DataFrame({"merchant_id": ["M005", "M050", "M096", "M999"],
                           "date": [date(2026, 1, 6), date(2026, 1, 12), date(2026, 2, 9), date(2026, 1, 6)]})
    got = pl.scan_parquet(path).filter(keys_in(["merchant_id", "date"], wanted)).collect()
    assert got.sort("n").equals(history.join(wanted, on=["merchant_id", "date"], how="semi").sort("n"))
    assert got.height > 0
    ids = pl.DataFrame({"review_id": ["R00007", "R03999", "R01234", "Z"]})
    got = pl.scan_parquet(path).filter(keys_in(["review_id"], ids)).collect()
    assert sorted(got["review_id"].to_list()) == ["R00007", "R01234", "R03999"]
    # A struct key with a null part gets no bounds for that column (the list alone decides).
    with_null = pl.DataFrame({"merchant_id": [None, "M005"], "date": [date(2026, 1, 6), date(2026, 1, 6)]},
                             schema={"merchant_id": pl.String, "date": pl.Date})
    got = pl.scan_parquet(path).filter(keys_in(["merchant_id", "date"], with_null)).collect()
    assert got.equals(history.sort("date").filter(
        (pl.col("merchant_id") == "M005") & (pl.col("date") == date(2026, 1, 6))))
    assert "is_between" in str(keys_in(["review_id"], ids))
