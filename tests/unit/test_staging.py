"""Staging: every format and encoding the contract allows, typed exactly, or a clear rejection."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import polars as pl
import pyarrow as pa
import pytest

from transforms.errors import FileRejected
from transforms.schemas import SOURCES
from transforms.staging import (
    check_columns,
    parse_csv,
    parse_jsonl,
    parse_parquet,
    pseudonymise,
    type_frame,
)

REV = SOURCES["reviews"]
DT = date(2026, 3, 1)
HEADER = "review_id,merchant_id,order_id,reviewer_id,rating,text,created_at,verified_purchase"


def _typed(text: str, *, encoding: str = "utf-8") -> pl.DataFrame:
    raw, _ = parse_csv(text.encode(encoding), "f.csv", ["utf-8", "gb18030"])
    check_columns(raw, REV, "f.csv")
    return type_frame(raw, REV, "f.csv", DT)


def test_csv_with_bom_crlf_and_quoted_newlines_round_trips() -> None:
    text = "\ufeff" + HEADER + "\r\nR1,M1,,u1,5,\"great, \"\"really\"\"\r\nsecond line\",2026-03-01T08:00:00Z,true\r\n"
    t = _typed(text)
    assert t.height == 1
    assert t["text"][0] == 'great, "really"\r\nsecond line'
    assert t["_parse_errors"][0].to_list() == []
    assert t["_row_number"][0] == 1


def test_gb18030_csv_is_decoded_not_garbled() -> None:
    text = HEADER + "\nR1,M1,,u1,1,与描述不符 货不对板,2026-03-01T08:00:00+08:00,false\n"
    t = _typed(text, encoding="gb18030")
    assert t["text"][0] == "与描述不符 货不对板"
    assert t["created_at"][0] == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


def test_undecodable_bytes_are_a_file_level_rejection_naming_the_file() -> None:
    with pytest.raises(FileRejected) as exc:
        parse_csv(b"a,b\n\xff\xfe\xfa,\x81\n", "landing/reviews/dt=2026-03-01/x.csv", ["utf-8"])
    assert exc.value.rule == "invalid_encoding"
    assert "landing/reviews/dt=2026-03-01/x.csv" in str(exc.value)


def test_missing_required_column_is_named() -> None:
    raw, _ = parse_csv(b"review_id,merchant_id\nR1,M1\n", "f.csv", ["utf-8"])
    with pytest.raises(FileRejected) as exc:
        check_columns(raw, REV, "f.csv")
    assert exc.value.rule == "missing_column"
    assert "reviewer_id" in exc.value.message


def test_extra_columns_are_reported_not_fatal() -> None:
    raw, _ = parse_csv((HEADER + ",colour\nR1,M1,,u1,5,,2026-03-01T08:00:00Z,true,red\n").encode(), "f.csv", ["utf-8"])
    assert check_columns(raw, REV, "f.csv") == ["colour"]


def test_empty_and_header_only_files_contribute_no_rows() -> None:
    empty, _ = parse_csv(b"", "e.csv", ["utf-8"])
    assert empty.height == 0
    header_only, _ = parse_csv((HEADER + "\n").encode(), "h.csv", ["utf-8"])
    assert header_only.height == 0
    assert check_columns(header_only, REV, "h.csv") == []


def test_unparseable_values_become_row_errors_not_silent_nulls() -> None:
    t = _typed(HEADER + "\nR1,M1,,u1,five,,2026-13-45T99:00,maybe\nR2,M1,,u2,4.0,,2026-03-01 08:00,1\n")
    assert sorted(t["_parse_errors"][0].to_list()) == [
        "unparseable:created_at", "unparseable:rating", "unparseable:verified_purchase"]
    assert t["rating"][0] is None
    assert t["_parse_errors"][1].to_list() == []
    assert t["rating"][1] == 4
    assert t["verified_purchase"][1] is True


def test_a_whole_column_of_the_wrong_type_rejects_the_file() -> None:
    rows = "".join(f"R{i},M1,,u{i},great,,2026-03-01T08:00:00Z,true\n" for i in range(5))
    with pytest.raises(FileRejected) as exc:
        _typed(HEADER + "\n" + rows)
    assert exc.value.rule == "wrong_column_type"
    assert "rating" in exc.value.message


def test_timestamp_forms_offsets_and_naive_utc() -> None:
    t = _typed(HEADER + "\n" + "\n".join([
        "R1,M1,,u,5,,2026-03-01T08:00:00Z,true",
        "R2,M1,,u,5,,2026-03-01T16:00:00+08:00,true",
        "R3,M1,,u,5,,2026-03-01T08:00:00,true",
        "R4,M1,,u,5,,2026-03-01T08:00:00.250000,true",
    ]) + "\n")
    assert t["created_at"].to_list()[:3] == [datetime(2026, 3, 1, 8, tzinfo=UTC)] * 3
    assert t["created_at"][3] == datetime(2026, 3, 1, 8, 0, 0, 250000, tzinfo=UTC)


def test_jsonl_values_of_any_json_type_are_typed() -> None:
    data = (b'{"review_id":"R1","merchant_id":"M1","reviewer_id":"u","rating":5,"created_at":"2026-03-01T08:00:00Z",'
            b'"verified_purchase":true}\n{"review_id":"R2","merchant_id":"M1","reviewer_id":"u","rating":"3",'
            b'"created_at":"2026-03-01T08:00:00Z","verified_purchase":"false","text":null}\n')
    raw, _ = parse_jsonl(data, "f.jsonl", ["utf-8"])
    t = type_frame(raw, REV, "f.jsonl", DT)
    assert t["rating"].to_list() == [5, 3]
    assert t["verified_purchase"].to_list() == [True, False]
    assert t["order_id"].to_list() == [None, None]


def test_jsonl_garbage_line_is_a_file_rejection() -> None:
    with pytest.raises(FileRejected) as exc:
        parse_jsonl(b'{"a": 1}\nnot json\n', "f.jsonl", ["utf-8"])
    assert exc.value.rule == "malformed_jsonl"


def test_parquet_compatible_physical_types_are_normalised() -> None:
    table = pa.table({
        "review_id": pa.array(["R1"], pa.large_string()), "merchant_id": pa.array(["M1"]),
        "reviewer_id": pa.array(["u"]), "rating": pa.array([4], pa.int32()),
        "created_at": pa.array([datetime(2026, 3, 1, 8)], pa.timestamp("ms", tz="Asia/Shanghai")),
        "verified_purchase": pa.array([True]),
    })
    raw = parse_parquet(table, "f.parquet")
    t = type_frame(raw, REV, "f.parquet", DT)
    assert t.schema["rating"] == pl.Int64
    assert t.schema["created_at"] == pl.Datetime("us", "UTC")
    assert t["created_at"][0] == datetime(2026, 3, 1, 8, tzinfo=UTC)


def test_pseudonymise_is_keyed_stable_and_hides_the_identifier() -> None:
    df = pl.DataFrame({"reviewer_id": ["alice", "bob", "alice", None]})
    a = pseudonymise(df, ["reviewer_id"], b"k1")["reviewer_id"].to_list()
    b = pseudonymise(df, ["reviewer_id"], b"k2")["reviewer_id"].to_list()
    assert a[0] == a[2] != a[1]
    assert a[3] is None
    assert a[0] != b[0]
    assert all("alice" not in v and "bob" not in v for v in a if v)


def test_csv_reader_accepts_text_stream_equivalents() -> None:
    # Guard against a polars change in how an all-string CSV is read back.
    df = pl.read_csv(io.BytesIO(b"a,b\n1,\n"), infer_schema=False)
    assert df.schema["a"] == pl.String
