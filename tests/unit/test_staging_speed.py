"""The faster staging paths give exactly what the reference (slower) forms give."""

from __future__ import annotations

import hmac
from datetime import date

import polars as pl
import pytest

from tests.unit.test_staging import TRICKY_TIMESTAMPS, _ts_mutations
from transforms.schemas import SOURCES
from transforms.staging import (
    _hmac_hex24_many,
    _hmac_pads,
    _int_from_string,
    _ts_fast,
    _ts_fast_values,
    _typed_expr,
    parse_csv,
    parse_ints,
    parse_jsonl,
    pseudonymise,
    type_frame,
)

_IDS = ["u1", "", " u1 ", "é中😀", "a" * 300, "x\ny", "u1", "\u00a0", "0"]


@pytest.mark.parametrize("key", [b"k", b"", b"K" * 64, b"K" * 65, bytes(range(256))])
def test_pseudonyms_are_hmac_sha256_hex24_byte_for_byte(key: bytes) -> None:
    df = pl.DataFrame({"reviewer_id": [*_IDS, None], "other": list(range(len(_IDS) + 1))})
    out = pseudonymise(df, ["reviewer_id", "absent"], key)
    expected = [None if v is None else "p_" + hmac.new(key, v.encode(), "sha256").hexdigest()[:24]
                for v in df["reviewer_id"].to_list()]
    assert out["reviewer_id"].to_list() == expected
    assert out.columns == df.columns
    assert out["other"].equals(df["other"])
    inner, outer = _hmac_pads(key)
    assert _hmac_hex24_many(inner, outer, pl.Series([], dtype=pl.String)).to_list() == []


def test_pseudonymise_on_a_chunked_frame_keeps_row_order_nulls_and_other_types() -> None:
    # read_ndjson returns many chunks; the join must keep the row order across them.
    parts = [pl.DataFrame({"id": [f"u{i % 7}" if i % 5 else None for i in range(j, j + 50)],
                           "n": pl.Series([i % 3 for i in range(j, j + 50)], dtype=pl.Int64),
                           "l": [[i] for i in range(j, j + 50)]}) for j in range(0, 500, 50)]
    df = pl.concat(parts, rechunk=False)
    assert df.n_chunks() > 1
    out = pseudonymise(df, ["id", "n", "l"], b"key")
    one = pseudonymise(df.rechunk(), ["id", "n", "l"], b"key")
    assert out.equals(one)
    assert out.schema == pl.Schema({"id": pl.String, "n": pl.String, "l": pl.String})
    ref = {v: "p_" + hmac.new(b"key", v.encode(), "sha256").hexdigest()[:24] for v in ["u0", "u1", "2"]}
    assert out["id"][1] == ref["u1"]
    assert out["id"][0] is None
    assert out["n"][2] == ref["2"]
    assert out["l"].null_count() == df.height  # nested values have no faithful identity


_INT_TEXTS = ["1", " 2 ", "3.0", "3.5", "1e3", "-0", "+7", "nan", "inf", "-inf", "", "  ", None, "x",
              "9223372036854775807", "9223372036854775808", "4611686018427387904", "-3.0e2", "00012",
              "1_000", "0x10", "\u00a05\u00a0", "5\t", "true", "2026-01-01"]


def test_int_fast_path_reads_exactly_what_the_reference_reads() -> None:
    s = pl.Series("rating", _INT_TEXTS * 3)
    ref = s.to_frame().select(_int_from_string("rating")).to_series()
    assert parse_ints(s).equals(ref)
    assert parse_ints(s).name == "rating"
    assert parse_ints(pl.Series("r", ["1", "2"])).to_list() == [1, 2]  # nothing left for the slow path
    # The typing select reads the hidden column for text; other dtypes keep their expression.
    assert "__int_parsed:" in str(_typed_expr("rating", "int", pl.String))


def test_parse_errors_are_listed_per_row_in_row_order() -> None:
    n = 40
    rating = [("x" if i % 7 == 3 else "nan" if i % 11 == 5 else str(1 + i % 5)) for i in range(n)]
    created = [("bad" if i % 9 == 4 else "2026-01-01T00:00:00Z") for i in range(n)]
    df = pl.DataFrame({"review_id": [f"r{i}" for i in range(n)], "merchant_id": ["M1"] * n,
                       "reviewer_id": ["u"] * n, "rating": rating, "created_at": created,
                       "verified_purchase": ["true"] * n})
    out = type_frame(df, SOURCES["reviews"], "f.csv", date(2026, 1, 1))
    assert out["_row_number"].to_list() == list(range(1, n + 1))
    for i, errs in enumerate(out["_parse_errors"].to_list()):
        want = (["unparseable:rating"] if rating[i] in ("x", "nan") else []) + \
               (["unparseable:created_at"] if created[i] == "bad" else [])
        assert errs == want, i
    clean = type_frame(df.with_columns(pl.lit("3").alias("rating"), pl.lit("2026-01-01").alias("created_at")),
                       SOURCES["reviews"], "f.csv", date(2026, 1, 1))
    assert clean["_parse_errors"].to_list() == [[]] * n


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_utf8_input_is_read_from_its_own_bytes_like_from_re_encoded_text(bom: bytes) -> None:
    csv = bom + "a,b\r\n1,\"é,中\"\r\n\r\n2,x\r\n".encode()
    df, enc = parse_csv(csv, "f.csv", ["utf-8", "gb18030"])
    assert enc == "utf-8"
    assert df.to_dict(as_series=False) == {"a": ["1", "2"], "b": ["é,中", "x"]}
    jsonl = bom + '{"a":"é","b":1}\n{"a":null,"c":true}\n'.encode()
    df, enc = parse_jsonl(jsonl, "f.jsonl", ["utf-8", "gb18030"])
    assert enc == "utf-8"
    assert df.to_dict(as_series=False) == {"a": ["é", None], "b": ["1", None], "c": [None, "true"]}


def test_gb18030_input_is_still_re_encoded() -> None:
    df, enc = parse_csv("a,b\n1,中文\n".encode("gb18030"), "f.csv", ["utf-8", "gb18030"])
    assert enc == "gb18030"
    assert df["b"].to_list() == ["中文"]
    df, enc = parse_jsonl('{"a":"中文"}\n'.encode("gb18030"), "f.jsonl", ["utf-8", "gb18030"])
    assert enc == "gb18030"
    assert df["a"].to_list() == ["中文"]


@pytest.mark.parametrize("tails", [["", "Z"], ["+08:00"], ["", "Z", "+08:00", "-05:30", "+24:00", "+8:00", "z", None]])
def test_timestamp_fast_values_equal_the_fast_expression(tails: list[str | None]) -> None:
    # Files of only naive / Z values (no offset work), only offsets, and every mix, tricky values too.
    base = ["2026-01-01T00:00:00", " 2026-03-31 23:59:59", "2026-02-30T10:00:00", "2026-06-30T01:02:03.5"]
    vals = [None if t is None else b + t for b in base for t in tails]
    for values in (vals, [*vals, *TRICKY_TIMESTAMPS, *_ts_mutations(5_000)], [None, None], []):
        s = pl.Series("v", values, dtype=pl.String)
        expected = s.to_frame().select(_ts_fast("v")).to_series()
        got = _ts_fast_values(s)
        assert got.dtype == expected.dtype == pl.Datetime("us", "UTC")
        assert got.rename("v").equals(expected.rename("v"))
