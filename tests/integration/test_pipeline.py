"""End to end on a small landing zone: outputs, accounting, reruns, as-of and fail-closed."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from tests.landing import START, merchant, small_marketplace, write_rows
from transforms.pipeline import run_date
from transforms.schemas import SCORES_SCHEMA
from transforms.settings import Settings

pytestmark = pytest.mark.slow


def _manifest(root: Path, day: object) -> dict:  # type: ignore[type-arg]
    return json.loads((root / "runs" / f"score_date={day}" / "manifest.json").read_text())


def _scores(root: Path, day: object) -> pl.DataFrame:
    return pl.read_parquet(root / "scores" / f"score_date={day}")


def test_run_publishes_scores_manifest_and_balanced_accounting(lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root)
    result = run_date(last, settings)
    assert (result.status, result.exit_code) == ("published", 0)
    scores = _scores(lake_root, last)
    assert sorted(scores["merchant_id"]) == ["M0", "M1", "M2"]
    assert scores.columns == SCORES_SCHEMA.names
    assert scores["score"].is_between(0, 100).all()
    meta = pq.read_schema(next((lake_root / "scores" / f"score_date={last}").glob("*.parquet"))).metadata
    assert meta[b"policy_version"]
    assert meta[b"run_id"].decode() == result.run_id
    m = _manifest(lake_root, last)
    assert m["status"] == "published"
    for source, entry in m["sources"].items():
        rows = entry["rows"]
        assert rows["read"] == rows["accepted"] + rows["quarantined"] + rows["duplicate"] + rows["superseded"], source
        assert all(day["balanced"] for day in entry["by_delivery_day"].values())
    assert (lake_root / "runs" / f"score_date={last}" / "data_docs" / "index.html").exists()


def test_bad_rows_are_quarantined_with_reason_and_original_values(lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root, days=3)
    bad = [{"review_id": f"B{i}", "merchant_id": "M0", "order_id": None, "reviewer_id": "alice@example.com",
            "rating": 9, "text": "x", "created_at": f"{last}T01:00:00Z", "verified_purchase": "true"} for i in range(2)]
    good = [{"review_id": f"G{i}", "merchant_id": "M1", "order_id": None, "reviewer_id": "bob",
             "rating": 4, "text": "ok", "created_at": f"{last}T01:00:00Z", "verified_purchase": "true"}
            for i in range(60)]
    write_rows(lake_root, "reviews", last, good + bad, name="extra")
    assert run_date(last, settings).exit_code == 0
    q = pl.read_parquet(lake_root / "quarantine" / "reviews" / f"dt={last}")
    assert q.height == 2
    assert q["reason_codes"].to_list() == [["out_of_range:rating"]] * 2
    assert q["row_number"].to_list() == [61, 62]
    assert q["file"][0].endswith("extra.csv")
    assert json.loads(q["original"][0])["rating"] == "9"
    # Personal identifiers are pseudonymised in every output, quarantine included.
    assert "alice" not in q["original"][0]
    m = _manifest(lake_root, last)
    assert m["sources"]["reviews"]["quarantined_by_reason"] == {"out_of_range:rating": 2}


def test_rerun_gives_identical_rows_and_later_deliveries_do_not_change_a_date(
        lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root, days=6)
    day = last - timedelta(days=1)
    first = run_date(day, settings)
    rows1 = _scores(lake_root, day)
    # Land more data for the same and later business days, delivered later.
    write_rows(lake_root, "returns", last + timedelta(days=3), [
        {"return_id": "LATE1", "merchant_id": "M2", "order_id": "o", "requested_at": f"{day}T05:00:00Z",
         "reason": "quality_defect", "status": "requested", "refund_amount": None, "resolved_at": None,
         "updated_at": None}])
    run_date(last, settings)
    second = run_date(day, settings)
    assert second.run_id == first.run_id
    rows2 = _scores(lake_root, day)
    assert rows1.equals(rows2)


def test_file_level_failure_fails_closed_and_names_the_file(lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root, days=3)
    earlier = last - timedelta(days=1)
    assert run_date(earlier, settings).exit_code == 0
    published_before = _scores(lake_root, earlier)
    broken = lake_root / "landing" / "reviews" / f"dt={last}" / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"review_id,merchant_id\nR,M\n" * 50)[:40])
    result = run_date(last, settings)
    assert result.exit_code == 3
    assert "broken.csv.gz" in result.message
    assert "corrupt_gzip" in result.message
    assert not (lake_root / "scores" / f"score_date={last}").exists()
    m = _manifest(lake_root, last)
    assert m["status"] == "failed"
    assert m["error"]["file"].endswith("broken.csv.gz")
    assert _scores(lake_root, earlier).equals(published_before)


def test_quarantine_share_over_the_limit_trips_the_gate(lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root, days=2)
    write_rows(lake_root, "sales", last, [{"merchant_id": "M0", "date": str(last), "orders": -1,
                                           "late_shipments": 0, "cancellations": 0}] * 60, name="fix")
    result = run_date(last, settings)
    assert result.exit_code == 3
    assert "quarantine_share" in result.message
    assert "gate.override" in result.message


def test_unknown_merchant_rows_are_quarantined(lake_root: Path, settings: Settings) -> None:
    last = small_marketplace(lake_root, days=2, merchants=40)
    write_rows(lake_root, "merchants", last, [merchant("LATECOMER")], name="new")
    write_rows(lake_root, "sales", START, [{"merchant_id": "LATECOMER", "date": str(START), "orders": 3,
                                            "late_shipments": 0, "cancellations": 0}], name="early")
    assert run_date(last, settings).exit_code == 0
    q = pl.read_parquet(lake_root / "quarantine" / "sales" / f"dt={START}")
    assert q["reason_codes"].to_list() == [["unknown_merchant"]]
    assert "LATECOMER" in _scores(lake_root, last)["merchant_id"].to_list()


def test_incremental_nightly_runs_equal_a_full_recompute_from_raw(tmp_path: Path) -> None:
    import shutil

    nightly = tmp_path / "nightly"
    last = small_marketplace(nightly, days=6)
    # A bought-review burst so the aggregate path exercises discounting too.
    write_rows(nightly, "reviews", last, [
        {"review_id": f"X{i}", "merchant_id": "M2", "order_id": None, "reviewer_id": f"n{i}", "rating": 5,
         "text": "Best shop!!", "created_at": f"{last}T03:00:00Z", "verified_purchase": False} for i in range(12)],
        name="burst")
    for k in range(4, -1, -1):
        assert run_date(last - timedelta(days=k), Settings(root=str(nightly))).exit_code == 0
    # Only the new day's aggregate partition was built by the last run.
    assert len(list((nightly / "agg" / "reviews").iterdir())) == 6
    full = tmp_path / "full"
    shutil.copytree(nightly / "landing", full / "landing")
    assert run_date(last, Settings(root=str(full))).exit_code == 0
    a, b = _scores(nightly, last), _scores(full, last)
    assert a.filter(pl.col("merchant_id") == "M2")["discounted_review_count"][0] == 12
    assert a.equals(b)


def test_one_shard_and_four_shards_give_identical_scores_and_actions(tmp_path: Path) -> None:
    import shutil

    import yaml

    from transforms.policy import default_policy_path

    one = tmp_path / "one"
    last = small_marketplace(one, days=4, merchants=24)
    write_rows(one, "returns", last, [
        {"return_id": f"Q{i}", "merchant_id": f"M{i % 5}", "order_id": "o", "requested_at": f"{last}T05:00:00Z",
         "reason": "quality_defect", "status": "requested", "refund_amount": None, "resolved_at": None,
         "updated_at": None} for i in range(40)], name="defects")
    four = tmp_path / "four"
    shutil.copytree(one / "landing", four / "landing")
    policy = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    policy["enforcement"]["min_observed_days"] = 1  # let enforcement act on four days of data
    p1 = tmp_path / "one.yaml"
    p1.write_text(yaml.safe_dump(policy), encoding="utf-8")
    policy["shards"] = 4
    p4 = tmp_path / "four.yaml"
    p4.write_text(yaml.safe_dump(policy), encoding="utf-8")
    assert run_date(last, Settings(root=str(one), policy_path=p1)).exit_code == 0
    assert run_date(last, Settings(root=str(four), policy_path=p4)).exit_code == 0
    drop = ["run_id", "policy_version"]  # the policy file differs (shards), so its digest and run id do
    a, b = _scores(one, last).drop(drop), _scores(four, last).drop(drop)
    assert a.equals(b)
    acts = [pl.read_parquet(r / "actions" / f"score_date={last}").drop(*drop, "statement") for r in (one, four)]
    assert acts[0].equals(acts[1])
    assert acts[0].height > 0
    m4 = _manifest(four, last)
    assert len(m4["timings_seconds"]) >= 3
