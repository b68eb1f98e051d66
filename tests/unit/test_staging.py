"""Staging: every format and encoding the contract allows, typed exactly, or a clear rejection."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import polars as pl
import pyarrow as pa
import pytest

from transforms import staging
from transforms.errors import FileRejected
from transforms.schemas import SOURCES
from transforms.staging import (
    _csv_record_widths_fast,
    _csv_record_widths_slow,
    _ts_from_string,
    _utf8_bytes,
    check_columns,
    decode_text,
    parse_csv,
    parse_jsonl,
    parse_parquet,
    parse_timestamps,
    pseudonymise,
    spread_lists,
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


# Tricky timestamp texts: the fast path must read exactly what the full parse reads (or leave it).
TRICKY_TIMESTAMPS = [
    "2026-01-01T00:00:00", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+08:00", "2026-01-01T00:00:00-23:59",
    "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+08:60", "2026-01-01T24:00:00", "2026-01-01T23:59:60",
    "2026-02-29T00:00:00", "2024-02-29T00:00:00+01:00", "2026-1-01T00:00:00", "2026-01-01T0:00:00Z",
    "+2026-01-01T00:00:00", "2026-01-01T00:00:00+0800", "2026-01-01T00:00:00+08", "2026-01-01T00:00:00.5Z",
    "2026-01-01T00:00:00z", "0000-01-01T00:00:00", "9999-12-31T23:59:59+00:00", " 2026-01-01 10:00:00 ",
    "２０２６-01-01T00:00:00", "2026-01-01T00:00:00-00:00", "2026-01-01T00:00:00+99:00",
    "2026-01-01T00:00:00+00:00Z", "2026-01-01t00:00:00", "2026-01-01T00:00:0a", "2026-01-01T00:00:-1",
    "2026-13-01T00:00:00", "12026-01-01T00:00:00", "2026-01-01T00:00", "2026-01-01", "2026-03-01 08:00:00+08:00",
    "2026-06-30T01:02:03.1234567+01:00", "2026-01-01T00:00:00+08:00 ", "2026-01-01T00:00:00Z+08:00",
    "2026-01-01T00:00:00+8:00", "2026-01-01T00:00:00+08:0", "", "  ", None,
]


def _ts_mutations(n: int) -> list[str]:
    import random

    rng = random.Random(11)
    bases = ["2026-01-01T00:00:00", "2026-03-31T23:59:59Z", "2025-12-31 12:34:56+08:00",
             "2026-02-28T10:00:00-05:30", "2026-06-30T01:02:03.123456Z"]
    out = []
    for _ in range(n):
        v = list(rng.choice(bases))
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(v))
            if rng.random() < 0.5:
                v[i] = rng.choice("0123456789-+:TZ .z")
            else:
                v.insert(i, rng.choice("0123456789-+:TZ .z"))
        out.append("".join(v))
    return out


def test_timestamp_fast_path_reads_exactly_what_the_full_parse_reads() -> None:
    values = pl.Series("c", TRICKY_TIMESTAMPS + _ts_mutations(20_000), dtype=pl.String)
    fast = parse_timestamps(values)
    slow = values.to_frame().select(_ts_from_string("c")).to_series()
    assert fast.dtype == slow.dtype == pl.Datetime("us", "UTC")
    differ = values.filter(fast.ne_missing(slow)).to_list()
    assert differ == []
    assert fast[values.to_list().index("2026-01-01T00:00:00+08:00")] == datetime(2025, 12, 31, 16, tzinfo=UTC)


def _csv_walk(text: str) -> list[int] | str:
    try:
        return _csv_record_widths_slow(text, "f.csv")  # the standard-library walk only
    except FileRejected as exc:
        return exc.rule


def test_csv_width_fast_path_agrees_with_the_strict_csv_walk() -> None:
    import random

    rng = random.Random(5)
    bases = ['a,b,c\n1,2,3\n', 'a,b,c\r\n1,"x,y",3\r\n4,5,6', 'h1,h2\n"q""uote",x\n\n"multi\nline",y\n',
             'x,y,z\n"",,\n,"",\n', 'a\n1\n\n2\n', 'a,b\n"é,ü",中\n']
    pieces = ['"', ',', '\n', '\r', 'a', ' ', '""', '\r\n', 'é', ',"', '",']
    answered = 0
    for _ in range(20_000):
        t = list(rng.choice(bases))
        for _ in range(rng.randint(0, 3)):
            j = rng.randrange(len(t) + 1)
            if rng.random() < 0.5:
                t.insert(j, rng.choice(pieces))
            elif t:
                del t[min(j, len(t) - 1)]
        text = "".join(t)
        fast = _csv_record_widths_fast(text.encode("utf-8"))
        if fast is not None:
            answered += 1
            assert fast == _csv_walk(text), repr(text)
    assert answered > 5_000  # the fast path answers for well-formed files


@pytest.mark.parametrize("text", ['a,b\n1\n', 'a,b\n1,2,3\n', 'a,b\n"x"y,2\n', 'a,b\n"x,2\n', 'a,b\n1,2\r3,4\n',
                                  'a,b\n"x" ,2\n', 'a,b\nx"y,2\n'])
def test_csv_width_fast_path_leaves_every_problem_to_the_walk(text: str) -> None:
    assert _csv_record_widths_fast(text.encode("utf-8")) is None


_TEXTS = [b"", b"plain ascii,1\n", "caf\u00e9,\u4e2d\u6587,\U0001F600\n".encode(), b"\xef\xbb\xbfbom,x\n",
          "\u4e2d\u6587,gb\n".encode("gb18030"),  # not UTF-8: decoded as GB18030
          b"cut \xe4\xb8", b"bad \xff here", b"surrogate \xed\xa0\x80", b"overlong \xc0\xaf", b"nul\x00",
          b"\xff\xfeu\x00t\x00f\x00", "x\u00e9\u00e9\u00e9\u4e2d\u4e2d\U0001F600\U0001F600y".encode()]


@pytest.mark.parametrize("slice_bytes", [1, 2, 3, 5, 1 << 24])
def test_utf8_bytes_match_decoding_the_whole_text(monkeypatch: pytest.MonkeyPatch, slice_bytes: int) -> None:
    """The slice-by-slice UTF-8 check decides as a whole decode does, even with characters cut by a slice."""
    monkeypatch.setattr(staging, "_UTF8_CHECK_BYTES", slice_bytes)
    for data in _TEXTS:
        try:
            data.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        assert staging._is_utf8(data) is valid, data  # a valid file takes the slice-by-slice path
        for encodings in (["utf-8", "gb18030"], ["utf-8"], ["gb18030", "utf-8"], []):
            try:
                text, enc = decode_text(data, "f.csv", encodings)
            except FileRejected as exc:
                want = (exc.rule, exc.message)
            else:
                assert _utf8_bytes(data, "f.csv", encodings) == (text.encode("utf-8"), enc), (data, encodings)
                continue
            with pytest.raises(FileRejected) as got:
                _utf8_bytes(data, "f.csv", encodings)
            assert (got.value.rule, got.value.message) == want


@pytest.mark.parametrize("flags", [[], [False] * 4, [True] * 3, [False, True, False, False, True, True, False]])
def test_spread_lists_equals_gathering_from_an_empty_list_and_the_lists(flags: list[bool]) -> None:
    flag = pl.Series(flags, dtype=pl.Boolean)
    lists = pl.Series("codes", [["a", "b"], [], ["c"]][: int(flag.sum())], dtype=pl.List(pl.String))
    index = flag.cast(pl.UInt32)
    want = pl.concat([pl.Series("codes", [[]], pl.List(pl.String)), lists]).gather(index.cum_sum() * index)
    got = spread_lists(flag, lists)
    assert got.dtype == pl.List(pl.String)
    assert got.name == "codes"
    assert got.to_list() == want.to_list()
