"""Malformed landing inputs: a catalogue of cases, each ending as designed and never losing a row.

Every case starts from ``small_marketplace(root, days=3)`` (a clean landing zone) and
adds or replaces one bad thing for the score date D. Whatever the case, a run

* ends with exit code 0 or 3 as designed, never a traceback;
* names the file or the rule (in the run's message, the manifest or the warning log);
* writes ``runs/score_date=D/manifest.json`` whose accounting balances for every
  source and delivery day: read = accepted + quarantined + duplicate + superseded;
* publishes nothing under ``scores/score_date=D`` when it exits 3.

Running the CLI in a subprocess costs seconds of imports per case, so:

* **individual cases** (file-level failures, gate rules, missing sources: their exit code
  and message differ per case) each get their own landing zone, run in-process through
  :func:`transforms.pipeline.run_date`;
* **grouped cases** that all publish (row rules, formats and encodings, bad paths,
  duplicates and versions) each write their own uniquely named file into one shared
  landing zone per group; the group runs once and every case asserts on its own file;
* every file-level case is also run together under a policy with ``gate.file_failure:
  skip_file``: the run publishes and the manifest names each skipped file;
* five cases go through the real CLI in subprocesses (run in parallel, started when the
  module starts) for the no-traceback, quiet-logging and no-temp-leftovers guarantees.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.landing import START, small_marketplace
from tests.malformed.builders import (
    csv_text,
    files_containing,
    gate_setting,
    good_row,
    good_rows,
    jsonl_text,
    landing_dir,
    manifest,
    parquet_bytes,
    policy_copy,
    quarantine_rows,
    staged,
    unbalanced,
    write_bytes,
)
from transforms.pipeline import run_date
from transforms.schemas import SOURCES
from transforms.settings import Settings

pytestmark = pytest.mark.slow

D = START + timedelta(days=2)   # the score date of a 3-day marketplace
D9 = START + timedelta(days=8)  # the score date of a 9-day marketplace (volume band needs 7 days of history)
REPO = Path(__file__).resolve().parents[2]
REVIEW_COLS = SOURCES["reviews"].names


def rel(source: str, name: str, day: date = D) -> str:
    return f"landing/{source}/dt={day}/{name}"


# ------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    """What one in-process run left: its result, manifest and warning log."""

    root: Path
    day: date
    exit_code: int
    message: str
    manifest: dict[str, Any]
    logs: str

    @property
    def text(self) -> str:
        """Everything a reader sees about the run (message, manifest, warnings) as one string."""
        return "\n".join([self.message, json.dumps(self.manifest, ensure_ascii=False), self.logs])


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_lake(root: Path, day: date, policy: Path | None = None) -> Outcome:
    """Run the pipeline for ``day`` in-process, capturing its warnings."""
    handler = _Lines()
    logger = logging.getLogger("reputation")
    logger.addHandler(handler)
    try:
        result = run_date(day, Settings(root=str(root), policy_path=policy))
    finally:
        logger.removeHandler(handler)
    return Outcome(root, day, result.exit_code, result.message, manifest(root, day), "\n".join(handler.lines))


def assert_run_contract(o: Outcome, exit_code: int) -> None:
    """What every run guarantees, whatever its input."""
    assert o.exit_code == exit_code, o.message
    assert "Traceback" not in o.message
    assert "Traceback" not in o.logs
    assert unbalanced(o.manifest) == []
    scores = o.root / "scores" / f"score_date={o.day}"
    if exit_code == 3:
        assert o.manifest["status"] == "failed"
        assert "what to do" in o.message
        assert not scores.exists()
    else:
        assert o.manifest["status"] == "published"
        assert scores.exists()
        assert (o.root / "runs" / f"score_date={o.day}" / "data_docs" / "index.html").exists()


# ========================================================================= file-level cases
@dataclass(frozen=True)
class FileCase:
    """One unusable landing file: exit 3 under ``fail_run``, skipped (and named) under ``skip_file``."""

    id: str
    rule: str
    source: str
    name: str
    data: Callable[[], bytes]
    #: text that must not leak into the message (e.g. a personal identifier in the bad file)
    secret: str | None = None


def _review_csv(rows: list[dict[str, Any]], **kw: Any) -> bytes:
    return csv_text(rows, header=REVIEW_COLS, **kw).encode()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def _truncated_gzip(payload: bytes) -> bytes:
    z = gzip.compress(payload, mtime=0)
    return z[: len(z) // 2]


def _review_table(**over: pa.Array) -> pa.Table:
    rows = good_rows("reviews", D, 4, "PQ")
    cols: dict[str, Any] = {c: [r[c] for r in rows] for c in REVIEW_COLS}
    cols.update(over)
    return pa.table(cols)


FILE_CASES = [
    FileCase("truncated_csv_gzip", "corrupt_gzip", "reviews", "trunc.csv.gz",
             lambda: _truncated_gzip(_review_csv(good_rows("reviews", D, 40, "TG")))),
    FileCase("truncated_jsonl_gzip", "corrupt_gzip", "complaints", "trunc.jsonl.gz",
             lambda: _truncated_gzip(jsonl_text(good_rows("complaints", D, 40, "TJ")).encode())),
    FileCase("corrupt_parquet", "corrupt_parquet", "returns", "junk.parquet",
             lambda: random.Random(3).randbytes(4000)),
    FileCase("truncated_parquet", "corrupt_parquet", "reviews", "half.parquet",
             lambda: parquet_bytes(_review_table())[:-200]),
    FileCase("random_bytes_csv", "invalid_encoding", "reviews", "noise.csv",
             lambda: random.Random(5).randbytes(3000)),
    FileCase("high_bytes_not_gb18030", "invalid_encoding", "reviews", "latin.csv",
             lambda: (",".join(REVIEW_COLS) + "\r\n").encode() + b"R1,M0,,u,5,\xff\x80\xfe\x80,x,true\r\n"),
    FileCase("utf16_with_bom", "invalid_encoding", "reviews", "utf16.csv",
             lambda: csv_text(good_rows("reviews", D, 5, "U"), header=REVIEW_COLS).encode("utf-16")),
    FileCase("utf16le_without_bom", "invalid_encoding", "reviews", "utf16le.csv",
             lambda: csv_text(good_rows("reviews", D, 5, "V"), header=REVIEW_COLS).encode("utf-16-le")),
    FileCase("missing_required_column", "missing_column", "reviews", "norating.csv",
             lambda: csv_text([{k: v for k, v in r.items() if k != "rating"}
                               for r in good_rows("reviews", D, 5, "N")]).encode()),
    FileCase("headerless_csv", "missing_column", "reviews", "noheader.csv",
             lambda: b"R9,M0,O9,carol.white@example.net,5,ok,2026-03-03T01:00:00Z,true\r\n"
                     b"R10,M1,O10,dave@example.net,4,ok,2026-03-03T01:00:00Z,true\r\n",
             secret="carol.white@example.net"),
    FileCase("whole_column_wrong_type_csv", "wrong_column_type", "reviews", "words.csv",
             lambda: _review_csv([good_row("reviews", D, i, "W") | {"rating": "excellent"} for i in range(5)])),
    FileCase("shifted_columns_put_emails_in_rating", "wrong_column_type", "reviews", "shifted.csv",
             lambda: _review_csv([good_row("reviews", D, i, "SH") | {"rating": f"frank{i}@example.com"}
                                  for i in range(4)]), secret="frank0@example.com"),
    FileCase("whole_column_wrong_type_parquet_date", "wrong_column_type", "reviews", "dates.parquet",
             lambda: parquet_bytes(_review_table(rating=pa.array([date(2026, 1, 1)] * 4, pa.date32())))),
    FileCase("whole_column_wrong_type_parquet_bool", "wrong_column_type", "reviews", "bools.parquet",
             lambda: parquet_bytes(_review_table(rating=pa.array([True, False, True, True])))),
    FileCase("personal_id_as_list", "wrong_column_type", "reviews", "lists.parquet",
             lambda: parquet_bytes(_review_table(reviewer_id=pa.array([["a"], ["b"], ["c"], ["d"]])))),
    FileCase("binary_column_not_utf8", "invalid_encoding", "reviews", "binary.parquet",
             lambda: parquet_bytes(_review_table(text=pa.array([b"\xff\xfe", b"ok", None, None], pa.binary())))),
    FileCase("csv_line_with_too_few_fields", "malformed_csv", "reviews", "short.csv",
             lambda: _review_csv(good_rows("reviews", D, 3, "S")) + b"S9,M0,O9,u9,5\r\n"),
    FileCase("csv_line_with_too_many_fields", "malformed_csv", "reviews", "long.csv",
             lambda: _review_csv(good_rows("reviews", D, 3, "L"))
             + b"L9,M0,O9,u9,5,x,2026-03-03T01:00:00Z,true,9,9\r\n"),
    FileCase("csv_unclosed_quote", "malformed_csv", "reviews", "quote.csv",
             lambda: _review_csv(good_rows("reviews", D, 2, "Q"))
             + b'Q9,M0,O9,erin@example.com,5,"never closed,2026-03-03T01:00:00Z,true\r\n',
             secret="erin@example.com"),
    FileCase("csv_duplicate_header", "duplicate_column", "reviews", "twice.csv",
             lambda: _utf8(",".join([*REVIEW_COLS, "rating"]) + "\r\n"
                           + "DH1,M0,O1,u1,5,x,2026-03-03T01:00:00Z,true,1\r\n")),
    FileCase("jsonl_line_not_json", "malformed_jsonl", "reviews", "broken.jsonl",
             lambda: _utf8(jsonl_text(good_rows("reviews", D, 2, "J")) + '{"review_id": "J9", "rating": \n')),
    FileCase("jsonl_line_is_an_array", "malformed_jsonl", "reviews", "array.jsonl",
             lambda: _utf8(jsonl_text(good_rows("reviews", D, 2, "A")) + "[1, 2, 3]\n")),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.id)
def test_file_level_failure_fails_closed_naming_file_and_rule(case: FileCase, tmp_path: Path) -> None:
    assert gate_setting("file_failure", "fail_run") == "fail_run"
    root = tmp_path / "lake"
    small_marketplace(root, days=3)
    write_bytes(root, case.source, D, case.name, case.data())
    o = run_lake(root, D)
    assert_run_contract(o, 3)
    path = rel(case.source, case.name)
    assert path in o.message
    assert f"[{case.rule}]" in o.message
    assert o.message.count(path) == 1  # named once, not repeated
    assert o.manifest["error"]["file"] == path
    assert o.manifest["error"]["rule"] == case.rule
    failures = o.manifest["sources"][case.source]["file_failures"]
    assert [(f["file"], f["rule"]) for f in failures] == [(path, case.rule)]
    assert failures[0]["hint"]
    # The failed run's Data Docs are published with its manifest.
    assert (root / "runs" / f"score_date={D}" / "data_docs" / "index.html").exists()
    if case.secret:
        assert case.secret not in o.text


def test_every_file_level_failure_is_skipped_and_named_under_skip_file(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    small_marketplace(root, days=3)
    for case in FILE_CASES:
        write_bytes(root, case.source, D, case.name, case.data())
    o = run_lake(root, D, policy_copy(tmp_path, file_failure="skip_file"))
    assert_run_contract(o, 0)
    named = {(f["file"], f["rule"]) for s in o.manifest["sources"].values() for f in s.get("file_failures", [])}
    assert named == {(rel(c.source, c.name), c.rule) for c in FILE_CASES}
    skipped = [c for c in o.manifest["gate"]["checks"] if c["rule"].startswith("file:")]
    assert len(skipped) == len(FILE_CASES)
    assert {c["action"] for c in skipped} == {"file skipped"}
    for c in FILE_CASES:
        assert rel(c.source, c.name) in o.logs
    # Skipped files contribute no rows; the clean deliveries of the day are all there.
    assert o.manifest["sources"]["reviews"]["by_delivery_day"][str(D)]["read"] == 3
    assert "carol.white@example.net" not in o.text


# ============================================================================ gate cases
@dataclass(frozen=True)
class GateCase:
    id: str
    build: Callable[[Path, date], None]
    exit_code: int
    names: tuple[str, ...]
    days: int = 3
    gate: dict[str, Any] = field(default_factory=dict)
    check: Callable[[Outcome], None] | None = None


def _share_trip(root: Path, d: date) -> None:
    limit = float(gate_setting("max_quarantine_share", 0.05))
    n = max(int(gate_setting("min_rows_for_share", 0)), 60)
    bad = math.floor(n * limit) + 2
    rows = good_rows("reviews", d, n - bad, "G") + [good_row("reviews", d, i, "B") | {"rating": 9} for i in range(bad)]
    write_bytes(root, "reviews", d, "many.csv", _review_csv(rows))


def _volume_high(root: Path, d: date) -> None:
    write_bytes(root, "reviews", d, "flood.csv", _review_csv(good_rows("reviews", d, 40, "V")))


def _volume_low(root: Path, d: date) -> None:
    (landing_dir(root, "reviews", d) / "part-1.jsonl").unlink()
    write_bytes(root, "reviews", d, "none.csv", (",".join(REVIEW_COLS) + "\r\n").encode())


def _drop(source: str) -> Callable[[Path, date], None]:
    return lambda root, d: shutil.rmtree(root / "landing" / source / f"dt={d}")


def _empty_folder(root: Path, d: date) -> None:
    shutil.rmtree(root / "landing" / "reviews" / f"dt={d}")
    landing_dir(root, "reviews", d)


def _only_misnamed(root: Path, d: date) -> None:
    folder = landing_dir(root, "reviews", d)
    (folder / "part-1.jsonl").rename(folder / "part 1.jsonl")


def _reviews_partition_links_to_etc(root: Path, d: date) -> None:
    shutil.rmtree(root / "landing" / "reviews" / f"dt={d}")
    os.symlink("/etc", root / "landing" / "reviews" / f"dt={d}")


def _landing_is_a_link(root: Path, d: date) -> None:
    real = root.parent / "elsewhere"
    shutil.move(str(root / "landing"), real)
    os.symlink(real, root / "landing")


def _check_override(o: Outcome) -> None:
    assert o.manifest["gate"]["override"] is True
    assert o.manifest["gate"]["passed"] is False
    assert "volume_band" in o.manifest["gate"]["overridden"]
    assert "gate.override" in o.logs


def _check_bad_path(path: str) -> Callable[[Outcome], None]:
    def check(o: Outcome) -> None:
        paths = {b["rel"] for s in o.manifest["sources"].values() for b in s.get("bad_paths", [])}
        assert path in paths
    return check


GATE_CASES = [
    GateCase("quarantine_share_over_limit", _share_trip, 3, ("[quarantine_share]", "reviews", "gate.override")),
    GateCase("volume_above_band", _volume_high, 3, ("[volume_band]", "reviews", "gate.override"), days=9,
             gate={"volume_min_median_rows": 0}),
    GateCase("volume_below_band", _volume_low, 3, ("[volume_band]", "reviews"), days=9,
             gate={"volume_min_median_rows": 0}),
    GateCase("missing_reviews", _drop("reviews"), 3, ("[missing_source]", "reviews")),
    GateCase("missing_sales", _drop("sales"), 3, ("[missing_source]", "sales")),
    GateCase("empty_reviews_folder", _empty_folder, 3, ("[missing_source]", "reviews")),
    GateCase("only_misnamed_reviews_file", _only_misnamed, 3, ("[missing_source]", "reviews"),
             check=_check_bad_path(rel("reviews", "part 1.jsonl"))),
    GateCase("reviews_partition_is_a_link_to_etc", _reviews_partition_links_to_etc, 3,
             ("[missing_source]", "reviews"), check=_check_bad_path(f"landing/reviews/dt={D}")),
    GateCase("landing_folder_is_a_link", _landing_is_a_link, 3, ("[missing_source]",),
             check=_check_bad_path("landing")),
    GateCase("override_publishes_and_is_recorded", _volume_high, 0, (), days=9,
             gate={"override": True, "volume_min_median_rows": 0},
             check=_check_override),
]


@pytest.mark.parametrize("case", GATE_CASES, ids=lambda c: c.id)
def test_gate(case: GateCase, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    day = small_marketplace(root, days=case.days)
    case.build(root, day)
    o = run_lake(root, day, policy_copy(tmp_path, **case.gate) if case.gate else None)
    assert_run_contract(o, case.exit_code)
    for name in case.names:
        assert name in o.message
    if case.check:
        case.check(o)


# ========================================================================= grouped cases
@dataclass(frozen=True)
class Member:
    """One case of a group: writes its own file(s) for D, then asserts on them after the group's run."""

    id: str
    build: Callable[[Path], None]
    check: Callable[[Outcome], None]


def _run_group(members: list[Member], tmp: Path, filler: dict[str, int] | None = None) -> Outcome:
    root = tmp / "lake"
    small_marketplace(root, days=3)
    for m in members:
        m.build(root)
    for source, n in (filler or {}).items():  # clean rows that keep the day's quarantined share low
        write_bytes(root, source, D, "filler.csv", csv_text(good_rows(source, D, n, "FILL")).encode())
    return run_lake(root, D)


# --- row rules --------------------------------------------------------------------------
@dataclass(frozen=True)
class RowCase:
    id: str
    source: str
    change: dict[str, Any]
    reasons: tuple[str, ...]
    fmt: str = "csv"


ROW_CASES = [
    RowCase("required_value_missing", "reviews", {"rating": None}, ("missing_value:rating",)),
    RowCase("personal_id_missing", "complaints", {"complainant_id": None}, ("missing_value:complainant_id",)),
    RowCase("rating_zero", "reviews", {"rating": 0}, ("out_of_range:rating",)),
    RowCase("rating_six", "reviews", {"rating": 6}, ("out_of_range:rating",)),
    RowCase("rating_not_a_number", "reviews", {"rating": "five"}, ("unparseable:rating",)),
    RowCase("rating_fractional", "reviews", {"rating": "4.5"}, ("unparseable:rating",)),
    RowCase("bool_unreadable", "reviews", {"verified_purchase": "maybe"}, ("unparseable:verified_purchase",)),
    RowCase("unknown_complaint_category", "complaints", {"category": "banana"}, ("out_of_domain:category",)),
    RowCase("unknown_channel", "complaints", {"channel": "fax"}, ("out_of_domain:channel",)),
    RowCase("unknown_complaint_status", "complaints", {"status": "lost"}, ("out_of_domain:status",)),
    RowCase("unknown_return_reason", "returns", {"reason": "whim"}, ("out_of_domain:reason",)),
    RowCase("unknown_return_status", "returns", {"status": "teleported"}, ("out_of_domain:status",)),
    RowCase("unknown_merchant_status", "merchants", {"status": "dormant"}, ("out_of_domain:status",)),
    RowCase("timestamp_unparseable", "reviews", {"created_at": "next tuesday"}, ("unparseable:created_at",)),
    RowCase("timestamp_feb_30", "reviews", {"created_at": "2026-02-30T10:00:00Z"}, ("unparseable:created_at",)),
    RowCase("timestamp_hour_25", "reviews", {"created_at": "2026-03-02T25:00:00"}, ("unparseable:created_at",)),
    RowCase("review_created_after_delivery_day", "reviews", {"created_at": f"{D + timedelta(days=1)}T00:30:00Z"},
            ("after_delivery:created_at",)),
    RowCase("response_before_complaint_opened", "complaints",
            {"opened_at": f"{D}T05:00:00Z", "first_response_at": f"{D}T04:00:00Z"},
            ("cross_field:first_response_at<opened_at",)),
    RowCase("complaint_resolved_before_opened", "complaints",
            {"opened_at": f"{D}T05:00:00Z", "first_response_at": None, "resolved_at": f"{D}T04:00:00Z",
             "status": "resolved"}, ("cross_field:resolved_at<opened_at",)),
    RowCase("return_resolved_before_requested", "returns",
            {"requested_at": f"{D}T05:00:00Z", "resolved_at": f"{D}T04:00:00Z", "status": "refunded"},
            ("cross_field:resolved_at<requested_at",)),
    RowCase("late_shipments_over_orders", "sales", {"orders": 2, "late_shipments": 3},
            ("cross_field:late_shipments>orders",)),
    RowCase("cancellations_over_orders", "sales", {"orders": 2, "cancellations": 5},
            ("cross_field:cancellations>orders",)),
    RowCase("negative_orders", "sales", {"orders": -1, "late_shipments": 0, "cancellations": 0},
            ("cross_field:cancellations>orders", "cross_field:late_shipments>orders", "out_of_range:orders")),
    RowCase("sales_day_after_delivery", "sales", {"date": str(D + timedelta(days=1))}, ("future_date:date",)),
    RowCase("merchant_registered_in_future", "merchants", {"registered_on": str(D + timedelta(days=5))},
            ("future_date:registered_on",)),
    RowCase("refund_nan_csv", "returns", {"refund_amount": "NaN"}, ("non_finite:refund_amount",)),
    RowCase("refund_inf_parquet", "returns", {"refund_amount": float("inf")}, ("non_finite:refund_amount",),
            fmt="parquet"),
    RowCase("refund_nan_jsonl_literal", "returns", {"refund_amount": float("nan")}, ("non_finite:refund_amount",),
            fmt="jsonl"),
    RowCase("refund_negative", "returns", {"refund_amount": -3}, ("out_of_range:refund_amount",)),
    RowCase("review_text_over_10000_chars", "reviews", {"text": "好" * 10_001}, ("text_too_long:text",)),
    RowCase("complaint_text_over_10000_chars", "complaints", {"text": "x" * 10_001}, ("text_too_long:text",)),
    RowCase("review_id_wrong_form", "reviews", {"review_id": "R 1/x"}, ("invalid_identifier:review_id",)),
    RowCase("merchant_id_wrong_form", "reviews", {"merchant_id": "M#1"},
            ("invalid_identifier:merchant_id", "unknown_merchant")),
    RowCase("merchant_not_in_registry", "sales", {"merchant_id": "GHOST1"}, ("unknown_merchant",)),
    RowCase("several_rules_at_once", "reviews", {"rating": 9, "created_at": "garbage"},
            ("out_of_range:rating", "unparseable:created_at")),
    RowCase("email_reviewer_quarantined", "reviews", {"reviewer_id": "alice.smith@example.com", "rating": 0},
            ("out_of_range:rating",)),
]


def _row_file(case: RowCase) -> str:
    return f"{case.id}.{case.fmt}"


def _build_row_case(case: RowCase) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        row = good_row(case.source, D, 0, prefix=f"RC{ROW_CASES.index(case)}") | case.change
        if case.fmt == "csv":
            data = csv_text([row]).encode()
        elif case.fmt == "jsonl":
            data = (json.dumps(row, ensure_ascii=False) + "\n").encode()  # json writes NaN as a bare literal
        else:
            data = parquet_bytes(pa.Table.from_pylist([row]))
        write_bytes(root, case.source, D, _row_file(case), data)
    return build


def _check_row_case(case: RowCase) -> Callable[[Outcome], None]:
    def check(o: Outcome) -> None:
        q = quarantine_rows(o.root, case.source, D).filter(pl.col("file") == rel(case.source, _row_file(case)))
        assert q.height == 1
        assert q["reason_codes"][0].to_list() == sorted(case.reasons)
        assert len(q["reasons"][0]) == len(case.reasons)
        assert q["row_number"][0] == 1
        original = json.loads(q["original"][0])
        for k, v in case.change.items():
            if SOURCES[case.source].column(k).personal or v is None:
                continue
            if case.fmt == "csv":
                assert original[k] == str(v)
            elif isinstance(v, str):
                assert original[k] == v
        assert staged(o.root, case.source, D).filter(pl.col("_file") == rel(case.source, _row_file(case))).height == 0
    return check


def _row_extra_members() -> list[Member]:
    def at_limit(root: Path) -> None:
        rows = [good_row("reviews", D, 0, "LIM") | {"text": "好" * 10_000},
                good_row("reviews", D, 1, "LIM") | {"text": "ok", "reviewer_id": "bob.jones@example.org"}]
        write_bytes(root, "reviews", D, "at_limit.csv", csv_text(rows).encode())

    def check_at_limit(o: Outcome) -> None:
        s = staged(o.root, "reviews", D).filter(pl.col("_file") == rel("reviews", "at_limit.csv"))
        assert s.height == 2
        assert s["text"].str.len_chars().to_list() == [10_000, 2]

    def extra(root: Path) -> None:
        rows = [good_row("reviews", D, i, "EXT") | {"colour": "red", "note": "x"} for i in range(2)]
        write_bytes(root, "reviews", D, "extra_cols.csv", csv_text(rows).encode())

    def check_extra(o: Outcome) -> None:
        extra = o.manifest["sources"]["reviews"]["extra_columns"]
        assert extra == {rel("reviews", "extra_cols.csv"): ["colour", "note"]}
        s = staged(o.root, "reviews", D).filter(pl.col("_file") == rel("reviews", "extra_cols.csv"))
        assert s.height == 2
        assert "colour" not in s.columns

    return [Member("text_exactly_10000_chars_accepted", at_limit, check_at_limit),
            Member("extra_columns_ignored_and_reported", extra, check_extra)]


ROW_MEMBERS = [Member(c.id, _build_row_case(c), _check_row_case(c)) for c in ROW_CASES] + _row_extra_members()


@pytest.fixture(scope="module")
def rows_run(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    counts: dict[str, int] = {}
    for c in ROW_CASES:
        counts[c.source] = counts.get(c.source, 0) + 1
    # Enough clean rows that the day's quarantined share stays under the gate's limit.
    limit = float(gate_setting("max_quarantine_share", 0.05))
    filler = {s: int(n / limit * 1.5) + 10 for s, n in counts.items()}
    return _run_group(ROW_MEMBERS, tmp_path_factory.mktemp("rows"), filler)


@pytest.mark.parametrize("member", ROW_MEMBERS, ids=lambda m: m.id)
def test_row_rule(member: Member, rows_run: Outcome) -> None:
    member.check(rows_run)


def test_row_rules_group_run_contract(rows_run: Outcome) -> None:
    assert_run_contract(rows_run, 0)
    expected: dict[str, dict[str, int]] = {}
    for c in ROW_CASES:
        for r in c.reasons:
            expected.setdefault(c.source, {})
            expected[c.source][r] = expected[c.source].get(r, 0) + 1
    for source, entry in rows_run.manifest["sources"].items():
        assert entry["by_delivery_day"][str(D)]["quarantined_by_reason"] == expected.get(source, {}), source


def test_personal_identifiers_never_leave_landing(rows_run: Outcome) -> None:
    # alice is in a quarantined row, bob in an accepted one: both are pseudonymised everywhere.
    for person in ("alice.smith@example.com", "bob.jones@example.org"):
        assert files_containing(rows_run.root, person, skip_top=()) != []  # it is in landing/ ...
        assert files_containing(rows_run.root, person) == []               # ... and nowhere else
    q = quarantine_rows(rows_run.root, "reviews", D).filter(
        pl.col("file") == rel("reviews", "email_reviewer_quarantined.csv"))
    assert json.loads(q["original"][0])["reviewer_id"].startswith("p_")


def test_quarantine_command_summarises_sources_and_top_reasons(rows_run: Outcome, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    from transforms import cli

    monkeypatch.delenv("REPUTATION_ROOT", raising=False)
    monkeypatch.setattr(cli.out, "width", 250)
    runner = CliRunner()
    res = runner.invoke(cli.app, ["quarantine", "--date", str(D), "--root", str(rows_run.root)])
    assert res.exit_code == 0, res.output
    for source in SOURCES:
        assert source in res.output
    reviews = rows_run.manifest["sources"]["reviews"]
    top, n = max(reviews["quarantined_by_reason"].items(), key=lambda kv: kv[1])
    assert f"{top} ({n})" in res.output
    res = runner.invoke(cli.app, ["quarantine", "--date", str(D), "--root", str(rows_run.root), "--source", "returns"])
    assert res.exit_code == 0, res.output
    assert "non_finite:refund_amount (3)" in res.output
    assert "reviews" not in res.output
    res = runner.invoke(cli.app, ["quarantine", "--date", "2020-01-01", "--root", str(rows_run.root)])
    assert res.exit_code == 2
    assert "no run recorded" in res.output


def test_data_docs_cover_every_suite(rows_run: Outcome) -> None:
    docs = rows_run.root / "runs" / f"score_date={D}" / "data_docs"
    index = (docs / "index.html").read_text(encoding="utf-8")
    for suite in [*SOURCES, "scores"]:
        assert f"{suite}_suite" in index
        assert list((docs / "validations" / f"{suite}_suite").rglob("*.html")), suite


# --- formats and encodings ---------------------------------------------------------------
FMT_TEXTS = ["good, \"really\" good", "line one\nline two", "很好 货不对板"]


def _fmt_rows(tag: str, n: int = 3) -> list[dict[str, Any]]:
    return [good_row("reviews", D, i, tag) | {"text": FMT_TEXTS[i % len(FMT_TEXTS)], "rating": 5 - i}
            for i in range(n)]


@dataclass(frozen=True)
class FormatCase:
    id: str
    name: str
    data: Callable[[list[dict[str, Any]]], bytes]
    rows: int = 3
    texts: tuple[str, ...] | None = None
    created_at: datetime | None = None


def _tbl(rows: list[dict[str, Any]], **types: pa.DataType) -> pa.Table:
    cols = {c: [r[c] for r in rows] for c in REVIEW_COLS}
    fields = [pa.field(c, types.get(c, pa.string() if c not in ("rating", "verified_purchase") else
                                    {"rating": pa.int64(), "verified_purchase": pa.bool_()}[c])) for c in REVIEW_COLS]
    arrays = []
    for f in fields:
        vals = cols[f.name]
        if pa.types.is_timestamp(f.type):
            vals = [datetime.fromisoformat(v.replace("Z", "+00:00")) for v in vals]
        arrays.append(pa.array(vals, f.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


CHINESE = ("与描述不符 货不对板", "质量很好，物流快", "客服态度差！")
SHANGHAI_8AM = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)  # 08:00 in Asia/Shanghai

FORMAT_CASES = [
    FormatCase("csv_utf8_with_bom", "bom.csv", lambda r: ("\ufeff" + csv_text(r)).encode()),
    FormatCase("csv_utf8_lf", "lf.csv", lambda r: csv_text(r, eol="\n").encode()),
    FormatCase("csv_crlf", "crlf.csv", lambda r: csv_text(r, eol="\r\n").encode()),
    FormatCase("csv_quoted_newlines_and_delimiters", "quoted.csv",
               lambda r: csv_text([x | {"text": t} for x, t in zip(r, ["a, b", 'say "hi"\r\nbye', "x\ny,z"],
                                                                         strict=True)]).encode(),
               texts=("a, b", 'say "hi"\r\nbye', "x\ny,z")),
    FormatCase("csv_gb18030", "gb18030.csv",
               lambda r: csv_text([x | {"text": t} for x, t in zip(r, [*CHINESE[:2], "𠀀 扩展B"], strict=True)])
               .encode("gb18030"), texts=(*CHINESE[:2], "𠀀 扩展B")),
    FormatCase("csv_gbk", "gbk.csv",
               lambda r: csv_text([x | {"text": t} for x, t in zip(r, CHINESE, strict=True)]).encode("gbk"),
               texts=CHINESE),
    FormatCase("csv_gzip", "zipped.csv.gz", lambda r: gzip.compress(csv_text(r).encode(), mtime=0)),
    FormatCase("csv_trailing_blank_lines", "blank.csv", lambda r: (csv_text(r) + "\r\n\r\n").encode()),
    FormatCase("jsonl", "plain.jsonl", lambda r: jsonl_text(r).encode()),
    FormatCase("jsonl_gzip", "zipped.jsonl.gz", lambda r: gzip.compress(jsonl_text(r).encode(), mtime=0)),
    FormatCase("jsonl_numbers_and_bools_as_text", "astext.jsonl",
               lambda r: _utf8(jsonl_text([x | {"rating": str(x["rating"]), "verified_purchase": "true"} for x in r]))),
    FormatCase("parquet_int32_rating", "int32.parquet", lambda r: parquet_bytes(_tbl(r, rating=pa.int32()))),
    FormatCase("parquet_int64_rating", "int64.parquet", lambda r: parquet_bytes(_tbl(r, rating=pa.int64()))),
    FormatCase("parquet_large_string", "large.parquet",
               lambda r: parquet_bytes(_tbl(r, review_id=pa.large_string(), text=pa.large_string(),
                                            merchant_id=pa.large_string()))),
    FormatCase("parquet_dictionary_strings", "dict.parquet",
               lambda r: parquet_bytes(_tbl(r, merchant_id=pa.dictionary(pa.int32(), pa.string())))),
    FormatCase("parquet_timestamp_ms_utc", "ms.parquet",
               lambda r: parquet_bytes(_tbl(r, created_at=pa.timestamp("ms", tz="UTC")))),
    FormatCase("parquet_timestamp_us_naive", "naive.parquet",
               lambda r: parquet_bytes(_tbl(r, created_at=pa.timestamp("us")))),
    FormatCase("parquet_timestamp_ns_shanghai", "ns.parquet",
               lambda r: parquet_bytes(_tbl(r).set_column(
                   REVIEW_COLS.index("created_at"), "created_at",
                   pa.array([SHANGHAI_8AM] * len(r), pa.timestamp("ns", tz="Asia/Shanghai")))),
               created_at=SHANGHAI_8AM),
    # Files with no rows are valid deliveries of nothing.
    FormatCase("empty_csv", "empty.csv", lambda r: b"", rows=0),
    FormatCase("header_only_csv", "header.csv", lambda r: ("\ufeff" + ",".join(REVIEW_COLS) + "\r\n").encode(), rows=0),
    FormatCase("empty_jsonl", "empty.jsonl", lambda r: b"", rows=0),
    FormatCase("empty_csv_gzip", "empty.csv.gz", lambda r: gzip.compress(b"", mtime=0), rows=0),
    FormatCase("empty_jsonl_gzip", "empty.jsonl.gz", lambda r: gzip.compress(b"\n", mtime=0), rows=0),
    FormatCase("empty_parquet_with_schema", "empty.parquet", lambda r: parquet_bytes(_tbl([])), rows=0),
]


def _build_format(case: FormatCase) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        rows = _fmt_rows(f"F{FORMAT_CASES.index(case)}", max(case.rows, 3))
        write_bytes(root, "reviews", D, case.name, case.data(rows))
    return build


def _check_format(case: FormatCase) -> Callable[[Outcome], None]:
    def check(o: Outcome) -> None:
        path = rel("reviews", case.name)
        assert path not in json.dumps(o.manifest["sources"]["reviews"]["file_failures"])
        s = staged(o.root, "reviews", D).filter(pl.col("_file") == path).sort("_row_number")
        assert s.height == case.rows
        q = quarantine_rows(o.root, "reviews", D).filter(pl.col("file") == path)
        assert q.height == 0
        if not case.rows:
            return
        tag = f"F{FORMAT_CASES.index(case)}"
        assert s["review_id"].to_list() == [f"{tag}R{i}" for i in range(case.rows)]
        assert s["rating"].to_list() == [5, 4, 3]
        assert s["verified_purchase"].to_list() == [True] * 3
        assert s["text"].to_list() == list(case.texts or FMT_TEXTS)
        assert s["created_at"].to_list() == [case.created_at or datetime(2026, 3, 3, 7, 0, tzinfo=UTC)] * 3
        assert all(v.startswith("p_") for v in s["reviewer_id"].to_list())
    return check


FORMAT_MEMBERS = [Member(c.id, _build_format(c), _check_format(c)) for c in FORMAT_CASES]


@pytest.fixture(scope="module")
def formats_run(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _run_group(FORMAT_MEMBERS, tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("member", FORMAT_MEMBERS, ids=lambda m: m.id)
def test_format_is_read_exactly(member: Member, formats_run: Outcome) -> None:
    member.check(formats_run)


def test_formats_group_run_contract(formats_run: Outcome) -> None:
    assert_run_contract(formats_run, 0)
    assert formats_run.manifest["sources"]["reviews"]["file_failures"] == []
    assert formats_run.manifest["sources"]["reviews"]["by_delivery_day"][str(D)]["quarantined"] == 0


# --- bad paths -------------------------------------------------------------------------
OUTSIDE_MARK = "ESCAPED77"


@dataclass(frozen=True)
class PathCase:
    id: str
    build: Callable[[Path], None]
    path: str
    rule: str
    source: str = "reviews"


def _file_in(folder: str, name: str, tag: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        p = root / "landing" / "reviews" / folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(csv_text(good_rows("reviews", D, 2, tag)).encode())
    return build


def _link(target: str | Callable[[Path], Path], link: str, replace: bool = False) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        where = root / link
        if replace:
            shutil.rmtree(where)
        where.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target(root) if callable(target) else target, where)
    return build


def _outside_returns(root: Path) -> Path:
    out = root.parent / "outside-returns"
    (out / f"dt={D}").mkdir(parents=True)
    (out / f"dt={D}" / "esc.csv").write_bytes(csv_text([good_row("returns", D, 0, OUTSIDE_MARK)]).encode())
    return out


PATH_CASES = [
    PathCase("partition_impossible_date", _file_in("dt=2026-13-45", "p.csv", "PA"), "landing/reviews/dt=2026-13-45",
             "bad_partition"),
    PathCase("partition_not_dt", _file_in("x", "p.csv", "PB"), "landing/reviews/x", "bad_partition"),
    PathCase("partition_dotdot", _file_in("dt=..", "p.csv", "PC"), "landing/reviews/dt=..", "bad_partition"),
    PathCase("file_name_with_space", _file_in(f"dt={D}", "a b.csv", "PD"), rel("reviews", "a b.csv"),
             "bad_file_name"),
    PathCase("unknown_extension_xlsx", _file_in(f"dt={D}", "sheet.xlsx", "PE"), rel("reviews", "sheet.xlsx"),
             "bad_file_name"),
    PathCase("uppercase_extension", _file_in(f"dt={D}", "upper.CSV", "PF"), rel("reviews", "upper.CSV"),
             "bad_file_name"),
    PathCase("folder_inside_partition", _file_in(f"dt={D}/sub", "p.csv", "PG"), rel("reviews", "sub"), "bad_path"),
    PathCase("file_link_to_etc_passwd", _link("/etc/passwd", f"landing/reviews/dt={D}/passwd.csv"),
             rel("reviews", "passwd.csv"), "bad_path"),
    PathCase("partition_link_to_etc", _link("/etc", f"landing/complaints/dt={D}", replace=True),
             f"landing/complaints/dt={D}", "bad_path", "complaints"),
    PathCase("source_link_outside_root", _link(_outside_returns, "landing/returns", replace=True),
             "landing/returns", "bad_path", "returns"),
]


def _check_path(case: PathCase) -> Callable[[Outcome], None]:
    def check(o: Outcome) -> None:
        bad = {(b["rel"], b["rule"]) for b in o.manifest["sources"][case.source]["bad_paths"]}
        assert (case.path, case.rule) in bad
        assert case.path in o.logs
    return check


PATH_MEMBERS = [Member(c.id, c.build, _check_path(c)) for c in PATH_CASES]


@pytest.fixture(scope="module")
def paths_run(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _run_group(PATH_MEMBERS, tmp_path_factory.mktemp("paths"))


@pytest.mark.parametrize("member", PATH_MEMBERS, ids=lambda m: m.id)
def test_bad_path_is_reported_and_skipped(member: Member, paths_run: Outcome) -> None:
    member.check(paths_run)


def test_bad_paths_are_never_followed_or_read(paths_run: Outcome) -> None:
    assert_run_contract(paths_run, 0)
    reviews = staged(paths_run.root, "reviews", D)
    # Only the clean delivery of D was read: nothing from misplaced, misnamed or linked files.
    assert reviews["_file"].unique().to_list() == [rel("reviews", "part-1.jsonl")]
    assert paths_run.manifest["sources"]["reviews"]["by_delivery_day"][str(D)]["read"] == 3
    assert files_containing(paths_run.root, OUTSIDE_MARK) == []
    assert files_containing(paths_run.root, "root:x:0:0") == []
    assert not (paths_run.root / "staged" / "returns").exists()
    assert not (paths_run.root / "staged" / "complaints" / f"dt={D}").exists()


# --- duplicates and versions ---------------------------------------------------------------
# small_marketplace delivers review R1-0 on day 2, complaint C0 and return T0 on day 1.
BASE_REVIEW = {"review_id": "R1-0", "merchant_id": "M0", "order_id": "O1-0", "reviewer_id": "u10", "rating": 5,
               "text": "good 很好", "created_at": f"{START + timedelta(days=1)}T08:00:00Z",
               "verified_purchase": True}
D1 = str(START)


def _dup_file(source: str, name: str, rows: list[dict[str, Any]]) -> Callable[[Path], None]:
    return lambda root: write_bytes(root, source, D, name, csv_text(rows).encode())


DUP_CASES: list[tuple[str, Callable[[Path], None]]] = [
    ("identical_redelivery_is_duplicate", _dup_file("reviews", "again.csv", [BASE_REVIEW])),
    ("identical_rows_in_one_file", _dup_file("reviews", "twice.csv", [good_row("reviews", D, 0, "TW")] * 2)),
    ("changed_redelivery_is_conflict", _dup_file("reviews", "changed.csv", [BASE_REVIEW | {"review_id": "R1-1",
                                                                                         "merchant_id": "M1",
                                                                                         "rating": 1}])),
    ("same_day_conflict_quarantines_all", _dup_file("reviews", "sameday.csv",
                                                    [good_row("reviews", D, 0, "SD"),
                                                     good_row("reviews", D, 0, "SD") | {"rating": 1}])),
    ("newer_complaint_version_supersedes", _dup_file("complaints", "newer.csv", [
        {"complaint_id": "C0", "merchant_id": "M0", "order_id": None, "complainant_id": "c0", "category": "quality",
         "channel": "app", "opened_at": f"{D1}T09:00:00", "first_response_at": f"{D1}T10:00:00",
         "resolved_at": f"{D}T01:00:00", "status": "resolved", "text": "broken",
         "updated_at": f"{D}T01:00:00"}])),
    ("newer_return_version_supersedes", _dup_file("returns", "newer.csv", [
        {"return_id": "T0", "merchant_id": "M1", "order_id": "O0-1", "requested_at": f"{D1}T09:00:00+08:00",
         "reason": "changed_mind", "status": "refunded", "refund_amount": 9.5, "resolved_at": f"{D}T01:00:00Z",
         "updated_at": f"{D}T01:00:00Z"}])),
]


def _check_dups(o: Outcome, case_id: str) -> None:
    reviews = o.manifest["sources"]["reviews"]["by_delivery_day"]
    complaints = o.manifest["sources"]["complaints"]["by_delivery_day"]
    returns = o.manifest["sources"]["returns"]["by_delivery_day"]
    q = quarantine_rows(o.root, "reviews", D)
    s = staged(o.root, "reviews", D)
    if case_id == "identical_redelivery_is_duplicate":
        assert s.filter(pl.col("_file") == rel("reviews", "again.csv")).height == 0
        assert q.filter(pl.col("file") == rel("reviews", "again.csv")).height == 0
        assert reviews[str(D)]["duplicate"] == 2  # this one and the second row of twice.csv
    elif case_id == "identical_rows_in_one_file":
        assert s.filter(pl.col("_file") == rel("reviews", "twice.csv"))["_row_number"].to_list() == [1]
    elif case_id == "changed_redelivery_is_conflict":
        mine = q.filter(pl.col("file") == rel("reviews", "changed.csv"))
        assert mine["reason_codes"].to_list() == [["conflicting_duplicate"]]
        # The first delivery stays accepted: reviews are never deleted by a re-delivery.
        assert staged(o.root, "reviews", START + timedelta(days=1)).filter(pl.col("review_id") == "R1-1").height == 1
    elif case_id == "same_day_conflict_quarantines_all":
        mine = q.filter(pl.col("file") == rel("reviews", "sameday.csv"))
        assert mine["row_number"].to_list() == [1, 2]
        assert mine["reason_codes"].to_list() == [["conflicting_duplicate"]] * 2
    elif case_id == "newer_complaint_version_supersedes":
        assert complaints[D1]["superseded"] == 1  # the old version is counted, not lost
        assert complaints[D1]["accepted"] == 0
        assert complaints[str(D)]["accepted"] == 2
        assert o.manifest["sources"]["complaints"]["rows"]["superseded"] == 1
    elif case_id == "newer_return_version_supersedes":
        assert returns[D1]["superseded"] == 1
        assert o.manifest["sources"]["returns"]["rows"]["read"] == 4


def _dup_check(case_id: str) -> Callable[[Outcome], None]:
    return lambda o: _check_dups(o, case_id)


DUP_MEMBERS = [Member(i, b, _dup_check(i)) for i, b in DUP_CASES]


@pytest.fixture(scope="module")
def dups_run(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _run_group(DUP_MEMBERS, tmp_path_factory.mktemp("dups"), {"reviews": 60})


@pytest.mark.parametrize("member", DUP_MEMBERS, ids=lambda m: m.id)
def test_duplicates_and_versions(member: Member, dups_run: Outcome) -> None:
    assert_run_contract(dups_run, 0)
    member.check(dups_run)


# ================================================================ contract of the suites
def test_docs_name_every_reason_code_and_file_rule() -> None:
    import re

    from transforms.expectations import suite_for_source

    doc = (REPO / "docs" / "validation.md").read_text(encoding="utf-8")
    kinds = {e["meta"]["reason_code"].split(":")[0] for s in SOURCES.values()
             for e in suite_for_source(s)["expectations"]}
    kinds |= {"unparseable", "non_finite", "unknown_merchant", "conflicting_duplicate"}
    code = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "transforms").glob("*.py"))
    file_rules = set(re.findall(r'FileRejected\(\s*[\w.]+,\s*"([a-z_]+)"', code))
    path_rules = set(re.findall(r'BadPath\([^)]*?"(bad_[a-z_]+)"', code))
    assert {"corrupt_gzip", "malformed_csv", "missing_column", "wrong_column_type"} <= file_rules
    for name in sorted(kinds | file_rules | path_rules | {"quarantine_share", "volume_band", "missing_source"}):
        assert f"`{name}" in doc, f"docs/validation.md does not explain {name}"


def test_committed_suites_equal_the_generated_ones() -> None:
    from transforms.expectations import expectations_dir, suite_for_source

    for source in SOURCES.values():
        committed = json.loads((expectations_dir() / f"{source.name}.json").read_text(encoding="utf-8"))
        assert committed == json.loads(json.dumps(suite_for_source(source))), (
            f"expectations/{source.name}.json is stale: run `reputation expectations --write`")


def test_a_run_is_quiet_and_leaves_no_temp_folders(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    root = tmp_path / "lake"
    small_marketplace(root, days=3)
    o = run_lake(root, D)
    assert_run_contract(o, 0)
    out, err = capfd.readouterr()
    assert "Calculating Metrics" not in out + err
    assert "great_expectations" not in err
    assert list(private_tmp.iterdir()) == []


# ============================================================= the real CLI, in subprocesses
@dataclass(frozen=True)
class CliCase:
    id: str
    build: Callable[[Path, Path], dict[str, str]]  # (root, folder) -> extra environment
    exit_code: int
    stderr_names: tuple[str, ...] = ()
    stdout_names: tuple[str, ...] = ()


def _cli_truncated_gzip(root: Path, folder: Path) -> dict[str, str]:
    write_bytes(root, "reviews", D, "trunc.csv.gz", _truncated_gzip(_review_csv(good_rows("reviews", D, 40, "TG"))))
    return {}


def _cli_gb18030(root: Path, folder: Path) -> dict[str, str]:
    rows = [good_row("reviews", D, i, "CG") | {"text": t} for i, t in enumerate(CHINESE)]
    write_bytes(root, "reviews", D, "gb.csv", csv_text(rows).encode("gb18030"))
    return {}


def _cli_skip_file(root: Path, folder: Path) -> dict[str, str]:
    write_bytes(root, "reviews", D, "half.parquet", parquet_bytes(_review_table())[:-200])
    return {"REPUTATION_POLICY_PATH": str(policy_copy(folder, file_failure="skip_file"))}


def _cli_share(root: Path, folder: Path) -> dict[str, str]:
    _share_trip(root, D)
    return {}


def _cli_links(root: Path, folder: Path) -> dict[str, str]:
    _link("/etc/passwd", f"landing/reviews/dt={D}/passwd.csv")(root)
    _link("/etc", f"landing/complaints/dt={D}", replace=True)(root)
    return {}


CLI_CASES = [
    CliCase("truncated_gzip", _cli_truncated_gzip, 3, (rel("reviews", "trunc.csv.gz"), "[corrupt_gzip]", "what to do")),
    CliCase("gb18030_published", _cli_gb18030, 0, (), ("published",)),
    CliCase("skip_file_policy_from_env", _cli_skip_file, 0, (rel("reviews", "half.parquet"), "corrupt_parquet"),
            ("published",)),
    CliCase("quarantine_share", _cli_share, 3, ("[quarantine_share]", "gate.override")),
    CliCase("links_never_followed", _cli_links, 0, (rel("reviews", "passwd.csv"), f"landing/complaints/dt={D}"),
            ("published",)),
]


@dataclass
class CliRun:
    root: Path
    tmp: Path
    proc: subprocess.Popen[str]
    out: str = ""
    err: str = ""
    code: int | None = None

    def wait(self) -> CliRun:
        if self.code is None:
            self.out, self.err = self.proc.communicate(timeout=600)
            self.code = self.proc.returncode
        return self


@pytest.fixture(scope="module", autouse=True)
def cli_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CliRun]]:
    """Start the CLI cases in parallel as soon as the module starts; they finish while the rest runs."""
    wanted = {c.id for c in CLI_CASES
              if any(i.module is request.module and f"[{c.id}]" in i.name and "cli" in i.name
                     for i in request.session.items)}
    runs: dict[str, CliRun] = {}
    for case in CLI_CASES:
        if case.id not in wanted:
            continue
        folder = tmp_path_factory.mktemp(f"cli-{case.id}")
        root, private_tmp = folder / "lake", folder / "tmp"
        private_tmp.mkdir()
        small_marketplace(root, days=3)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPUTATION_")}
        env |= {"TMPDIR": str(private_tmp), "PYTHONPATH": str(REPO)} | case.build(root, folder)
        # Low priority: they only need to be done by the time their tests come, at the end of the module.
        proc = subprocess.Popen([sys.executable, "-m", "transforms", "run", "--date", str(D), "--root", str(root)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: os.nice(10))  # noqa: PLW1509
        runs[case.id] = CliRun(root, private_tmp, proc)
    yield runs
    for r in runs.values():
        if r.proc.poll() is None:
            r.proc.kill()
        if r.code is None:
            r.proc.communicate()  # reap it and close its pipes


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli_subprocess(case: CliCase, cli_runs: dict[str, CliRun]) -> None:
    r = cli_runs[case.id].wait()
    assert r.code == case.exit_code, r.err
    assert "Traceback" not in r.out + r.err
    assert "Calculating Metrics" not in r.out + r.err
    for name in case.stderr_names:
        assert name in r.err
    for name in case.stdout_names:
        assert name in r.out
    m = manifest(r.root, D)
    assert unbalanced(m) == []
    assert (r.root / "scores" / f"score_date={D}").exists() == (case.exit_code == 0)
    # No Great Expectations (or other) temporary folders are left behind.
    assert [p.name for p in r.tmp.iterdir()] == []
