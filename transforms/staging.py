"""Staging: landing files to typed, canonical, pseudonymised frames.

Pure functions: bytes or Arrow tables in, Polars frames out. Each row keeps its
lineage (delivery day, file, 1-based row number) so a rejected row can always be
traced back to where it came from, and every row that is read is accounted for:
a value that cannot be typed becomes a row-level parse error, never a silent null.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa

from transforms.errors import FileRejected
from transforms.schemas import Source

#: A column is judged "of the wrong type" (a file-level failure) when at least this
#: many values are present and not one of them can be read as the column's kind.
WRONG_TYPE_MIN_VALUES = 3

# Long text fields are a row-level rule (text_too_long), never a CSV parsing failure.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_TRUE = ["true", "t", "1", "yes", "y"]
_FALSE = ["false", "f", "0", "no", "n"]


@dataclass
class ParsedFile:
    """One landing file read into a frame of strings (or typed values for Parquet)."""

    rel: str
    dt: date
    frame: pl.DataFrame
    encoding: str
    extra_columns: list[str] = field(default_factory=list)


def decode_text(data: bytes, rel: str, encodings: list[str]) -> tuple[str, str]:
    """Decode CSV or JSONL bytes, trying each configured encoding strictly in turn.

    A UTF-8 byte-order mark is removed. Decoding is strict: text is either decoded
    correctly or the file is rejected, never garbled.

    Raises
    ------
    FileRejected
        ``invalid_encoding`` when no configured encoding decodes the whole file.
    """
    return _decode_text_bytes(_text_bytes(data, rel, encodings), rel, encodings)


def _text_bytes(data: bytes, rel: str, encodings: list[str]) -> bytes:
    """``data`` without a UTF-8 byte-order mark; a UTF-16 or binary file is rejected."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise FileRejected(
            rel, "invalid_encoding",
            "the file contains NUL bytes or a UTF-16 byte-order mark (UTF-16 or binary data), not text in a "
            f"supported encoding ({', '.join(encodings)})",
            hint="re-export it as UTF-8 (or GB18030) and re-deliver it")
    return data


def _decode_text_bytes(data: bytes, rel: str, encodings: list[str]) -> tuple[str, str]:
    """:func:`decode_text` of bytes :func:`_text_bytes` has checked: each encoding in turn."""
    for enc in encodings:
        try:
            return data.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    raise FileRejected(
        rel, "invalid_encoding",
        f"the file is not valid text in any supported encoding ({', '.join(encodings)})",
        hint="re-export it as UTF-8, or add its encoding to REPUTATION_CSV_ENCODINGS",
    )


#: Bytes decoded at a time when a file is only checked to be UTF-8 (its text is not kept).
_UTF8_CHECK_BYTES = 1 << 24


def _is_utf8(data: bytes) -> bool:
    """Whether ``data.decode("utf-8")`` would succeed, decoding a slice at a time and keeping nothing."""
    view = memoryview(data)
    carry = b""  # the start of a character cut by a slice's end
    for start in range(0, len(view), _UTF8_CHECK_BYTES):
        chunk = carry + bytes(view[start:start + _UTF8_CHECK_BYTES])
        try:
            _, used = codecs.utf_8_decode(chunk, "strict", False)
        except UnicodeDecodeError:
            return False
        carry = chunk[used:]
    try:
        codecs.utf_8_decode(carry, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def _utf8_bytes(data: bytes, rel: str, encodings: list[str]) -> tuple[bytes, str]:
    """The text of ``data`` as UTF-8 bytes (what the Polars readers take), and its encoding.

    The outcome of :func:`decode_text` (the same checks, the encodings tried in the same order),
    without its text. A file in UTF-8 is only checked, a slice at a time, and its own bytes
    (less a byte-order mark) are returned: decoding it whole held its text beside its bytes,
    0.8 GB for a CSV of 5 M reviews (issue 3.10), while the Polars reader never reads the text.
    """
    data = _text_bytes(data, rel, encodings)
    if encodings and _is_utf8_name(encodings[0]) and _is_utf8(data):
        return data, encodings[0]
    text, enc = _decode_text_bytes(data, rel, encodings)
    return text.encode("utf-8"), enc


def _is_utf8_name(enc: str) -> bool:
    try:
        return codecs.lookup(enc).name == "utf-8"
    except LookupError:
        return False


def _decode_to_utf8(data: bytes, rel: str, encodings: list[str]) -> tuple[str, str, bytes]:
    """:func:`decode_text`, plus the text's UTF-8 bytes (what the Polars readers take).

    When the file decoded as UTF-8 those bytes are the file's own (minus a byte-order mark):
    a strict UTF-8 decode round-trips byte for byte, so encoding the text again (about half
    the cost of the decode) would only copy them.
    """
    text, enc = decode_text(data, rel, encodings)
    if codecs.lookup(enc).name == "utf-8":
        return text, enc, data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    return text, enc, text.encode("utf-8")


_CSV_HINT = "check quoting and the number of fields per line, then re-deliver"


def _csv_record_widths(raw: bytes, rel: str) -> list[int]:
    """Fields per record (0 for a blank line) of a CSV's UTF-8 bytes, checked strictly.

    Polars pads a short line with nulls without a word, which would turn a truncated
    line into silently missing values; this check names the line instead. A plainly
    well-formed file is checked vectorised (:func:`_csv_record_widths_fast`); any other
    by the standard library's reader (:func:`_csv_record_widths_slow`), which names the line.

    Raises
    ------
    FileRejected
        ``malformed_csv`` for broken quoting or a line whose field count differs from the header's.
    """
    fast = _csv_record_widths_fast(raw)
    return fast if fast is not None else _csv_record_widths_slow(raw.decode("utf-8"), rel)


def _csv_record_widths_slow(text: str, rel: str) -> list[int]:
    """:func:`_csv_record_widths` by the standard library's CSV reader, on the decoded text.

    Messages never quote field contents (they may hold personal data).
    """
    widths: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return widths
        for rec in reader:
            n = len(rec)
            if n and n != len(header):
                raise FileRejected(rel, "malformed_csv",
                                   f"line {reader.line_num} has {n} fields but the header has {len(header)}",
                                   hint=_CSV_HINT)
            widths.append(n)
    except csv.Error as exc:
        raise FileRejected(rel, "malformed_csv", f"line {reader.line_num}: {exc}", hint=_CSV_HINT) from None
    return widths


def _csv_record_widths_fast(raw: bytes) -> list[int] | None:
    """:func:`_csv_record_widths` for a plainly well-formed file, vectorised; ``None`` when unsure.

    Works on the UTF-8 bytes with NumPy (the four bytes that matter are ASCII and never occur
    inside a multi-byte character): a byte is inside a quoted field when an odd number of
    quotes precede it, so the record ends are the newlines and the field separators the commas
    outside quotes. The answer is only given when nothing is left to interpret: every quote
    opens a field (after a comma, a line end or the previous quote of a ``""`` pair) or closes
    one (before a comma, a line end or the next quote of a pair), the last quoted field is
    closed, every CR is part of a CRLF, the header has fields and every record is as wide as
    the header or blank. Anything else, every error included, goes to the standard-library
    walk, which names the line.
    """
    import numpy as np

    if not raw:
        return None
    b = np.frombuffer(raw, dtype=np.uint8)
    n = b.size
    cr = np.flatnonzero(b == 13)
    if cr.size and (cr[-1] == n - 1 or not (b[cr + 1] == 10).all()):
        return None
    quotes = np.flatnonzero(b == 34)
    if quotes.size % 2:
        return None  # a quoted field is never closed
    if quotes.size:
        opening, closing = quotes[0::2], quotes[1::2]
        before = np.where(opening > 0, b[np.maximum(opening - 1, 0)], 10)
        # The quote before an opening quote must be the closing quote right before it ("" pair).
        pair_open = np.zeros(opening.size, dtype=bool)
        pair_open[1:] = closing[:-1] == opening[1:] - 1
        if not (((before == 44) | (before == 10)) | pair_open).all():
            return None
        after = np.where(closing < n - 1, b[np.minimum(closing + 1, n - 1)], 10)
        pair_close = np.zeros(closing.size, dtype=bool)
        pair_close[:-1] = opening[1:] == closing[:-1] + 1
        if not (((after == 44) | (after == 10) | (after == 13)) | pair_close).all():
            return None

    def outside(pos: np.ndarray) -> np.ndarray:
        return pos[np.searchsorted(quotes, pos) % 2 == 0] if quotes.size else pos

    newlines = outside(np.flatnonzero(b == 10))
    commas = outside(np.flatnonzero(b == 44))
    # Records: [start, end) with end at each newline (and the text's end when it does not end in one).
    ends = newlines if newlines.size and newlines[-1] == n - 1 else np.append(newlines, n)
    starts = np.concatenate(([0], ends[:-1] + 1))
    commas_in = np.diff(np.searchsorted(commas, np.concatenate(([0], ends))))
    length = ends - starts - (b[np.maximum(ends - 1, 0)] == 13)  # without a CR before the newline
    widths = np.where(length == 0, 0, commas_in + 1)
    if widths[0] == 0:
        return None
    rest = widths[1:]
    if ((rest != 0) & (rest != widths[0])).any():
        return None
    return rest.tolist()  # Python ints already


def parse_csv(data: bytes, rel: str, encodings: list[str]) -> tuple[pl.DataFrame, str]:
    """Parse RFC 4180 CSV (header row, double-quote quoting) into string columns.

    Every line must have as many fields as the header; blank lines are not records
    and are skipped.
    """
    if not data.strip(b"\xef\xbb\xbf \r\n\t"):
        return pl.DataFrame(), "utf-8"
    raw, enc = _utf8_bytes(data, rel, encodings)
    widths = _csv_record_widths(raw, rel)
    try:
        df = pl.read_csv(io.BytesIO(raw), infer_schema=False, quote_char='"',
                         has_header=True, raise_if_empty=False, truncate_ragged_lines=False)
    except pl.exceptions.PolarsError as exc:
        first = re.sub(r"`.*", "(value withheld)", str(exc).splitlines()[0])  # never echo field contents
        raise FileRejected(rel, "malformed_csv", f"the CSV cannot be parsed ({first})", hint=_CSV_HINT) from None
    if df.height != len(widths):
        raise FileRejected(rel, "malformed_csv",
                           f"the file holds {len(widths)} records but {df.height} were parsed "
                           "(mixed or bare-CR line endings, or stray quotes)", hint=_CSV_HINT)
    if 0 in widths:
        df = df.filter(pl.Series([w > 0 for w in widths]))
    # The multi-threaded reader returns hundreds of chunks for a large file; per-column work
    # downstream is slower on a chunked column (and rechunking one read costs milliseconds).
    # One column at a time, so only that column is held twice (the whole frame at once held
    # 0.6 GB more for 5 M reviews).
    columns = df.get_columns()
    del df
    whole = []
    while columns:
        whole.append(columns.pop(0).rechunk())
    return pl.DataFrame(whole), enc


_JSONL_HINT = "every line must be one JSON object; fix or re-deliver the file"


def _json_text(v: object) -> str | None:
    """A JSON value as the string Polars gives it under a String schema."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _parse_jsonl_strict(text: str, rel: str) -> pl.DataFrame:
    """Line-by-line JSON Lines reader: names the bad line, and accepts NaN / Infinity.

    Used when the fast reader fails. ``NaN`` and ``Infinity`` (which Python's ``json``
    writes) are kept as text, so typing reports them per row as ``non_finite``.
    """
    rows: list[dict[str, str | None]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FileRejected(rel, "malformed_jsonl", f"line {i} is not valid JSON ({exc.msg} at column {exc.colno})",
                               hint=_JSONL_HINT) from None
        if not isinstance(obj, dict):
            raise FileRejected(rel, "malformed_jsonl", f"line {i} is a JSON {type(obj).__name__}, not an object",
                               hint=_JSONL_HINT)
        rows.append({str(k): _json_text(v) for k, v in obj.items()})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return pl.DataFrame([[r.get(k) for k in keys] for r in rows], schema=dict.fromkeys(keys, pl.String),
                        orient="row")


def parse_jsonl(data: bytes, rel: str, encodings: list[str]) -> tuple[pl.DataFrame, str]:
    """Parse JSON Lines: every key present in any line becomes a string column."""
    text, enc, raw = _decode_to_utf8(data, rel, encodings)
    if not text.strip():
        return pl.DataFrame(), enc
    try:
        keys = pl.scan_ndjson(io.BytesIO(raw), infer_schema_length=None).collect_schema().names()
        df = pl.read_ndjson(io.BytesIO(raw), schema=dict.fromkeys(keys, pl.String))
    except pl.exceptions.PolarsError:
        df = _parse_jsonl_strict(text, rel)
    return df, enc


def parse_parquet(table: pa.Table, rel: str) -> pl.DataFrame:
    """Convert a landing Parquet table, normalising compatible physical types.

    Binary columns (byte arrays without a UTF-8 annotation) are read as text when they
    are valid UTF-8; otherwise the file is rejected naming the column.
    """
    for i, fld in enumerate(table.schema):
        if pa.types.is_binary(fld.type) or pa.types.is_large_binary(fld.type) or \
                pa.types.is_fixed_size_binary(fld.type):
            try:
                table = table.set_column(i, fld.name, table.column(i).cast(pa.large_string()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise FileRejected(rel, "invalid_encoding", f"binary column {fld.name} is not UTF-8 text",
                                   hint="write text columns as UTF-8 strings and re-deliver") from None
    try:
        df = pl.from_arrow(table)
    except (pa.ArrowException, pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise FileRejected(rel, "unsupported_parquet_types", f"column types cannot be read ({exc})",
                           hint="deliver plain string, integer, float, boolean, date or timestamp columns") from None
    assert isinstance(df, pl.DataFrame)
    return df


def check_columns(df: pl.DataFrame, source: Source, rel: str) -> list[str]:
    """Return the extra columns; raise when a required column is missing.

    A file with no rows and no header (an empty file) has no columns and is valid.
    """
    if df.width == 0:
        return []
    missing = [c for c in source.required if c not in df.columns]
    if missing:
        # Name near misses (case, spaces) but never echo other header cells: a file without a
        # header row has data (possibly personal identifiers) where the header should be.
        near = [f"{c!r} for {n}" for c in df.columns for n in missing
                if c != n and c.strip().lower().replace(" ", "_") == n]
        found = f"; near misses: {', '.join(near)}" if near else ""
        raise FileRejected(rel, "missing_column", f"required column(s) {', '.join(missing)} are missing{found}",
                           hint=f"the {source.name} contract requires a header row with: "
                                f"{', '.join(source.required)}")
    # The CSV reader renames a repeated header to <name>_duplicated_<n>: which copy is right is unknown.
    repeated = sorted({m.group(1) for c in df.columns if (m := re.match(r"^(.+)_duplicated_\d+$", c))
                       and m.group(1) in source.names})
    if repeated:
        raise FileRejected(rel, "duplicate_column", f"column(s) {', '.join(repeated)} appear more than once",
                           hint="deliver each column once")
    return sorted(c for c in df.columns if c not in source.names)


def castable_to_string(dtype: pl.DataType) -> bool:
    """Whether a column of this type has a faithful string form (scalars do; nested and binary do not)."""
    return (dtype.is_numeric() or dtype in (pl.String, pl.Null, pl.Boolean, pl.Date, pl.Time)
            or isinstance(dtype, (pl.Datetime, pl.Duration, pl.Categorical, pl.Enum)))


def _ts_from_string(col: str) -> pl.Expr:
    """Every accepted timestamp text form (the reference; slow: four parses per value, coalesced)."""
    s = pl.col(col).str.strip_chars().str.replace(" ", "T", literal=True)
    with_offset = s.str.replace(r"Z$", "+00:00").str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_unit="us")
    naive = s.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC")
    minutes = s.str.to_datetime("%Y-%m-%dT%H:%M", strict=False, time_unit="us").dt.replace_time_zone("UTC")
    day = s.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.coalesce(with_offset.dt.convert_time_zone("UTC"), naive, minutes, day)


#: What may follow the first 19 characters (``YYYY-MM-DDTHH:MM:SS``) for the fast path: nothing,
#: ``Z`` or an offset ``±HH:MM`` that the reference parser accepts (hours 00–23, minutes 00–59).
_TS_FAST_TAIL = r"^(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"


def _ts_fast(col: str) -> pl.Expr:
    """The common fixed forms only (``YYYY-MM-DDTHH:MM:SS`` + nothing, ``Z`` or ``±HH:MM``); null otherwise.

    One fixed-format parse of the first 19 characters (a Polars fast path) plus the offset
    read from the tail. A value it cannot read is null and goes to :func:`_ts_from_string`;
    a value it reads gets the same instant as :func:`_ts_from_string` (tested on tricky values).
    """
    s = pl.col(col).str.strip_chars().str.replace(" ", "T", literal=True)
    tail = s.str.slice(19)
    base = s.str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us")
    value = base.dt.replace_time_zone("UTC") - pl.duration(minutes=_tail_offset_minutes(tail), time_unit="us")
    return pl.when(tail.str.contains(_TS_FAST_TAIL)).then(value).otherwise(None)


def _tail_offset_minutes(tail: pl.Expr) -> pl.Expr:
    """Minutes east of UTC of a ``±HH:MM`` tail; 0 for any other tail (``Z``, nothing)."""
    hours = tail.str.slice(1, 2).str.to_integer(strict=False)
    minutes = tail.str.slice(4, 2).str.to_integer(strict=False)
    return (pl.when(tail.str.len_bytes() == 6)
            .then(pl.when(tail.str.starts_with("-")).then(-1).otherwise(1) * (hours * 60 + minutes))
            .otherwise(0))


def _ts_fast_values(values: pl.Series) -> pl.Series:
    """:func:`_ts_fast` of a text series, with the offset read only where there is one.

    Most files deliver naive (``YYYY-MM-DDTHH:MM:SS``) or ``Z`` timestamps: their tail is empty
    or ``Z``, a valid tail with a zero offset, so the tail's regular-expression check and the
    offset arithmetic (about half of :func:`_ts_fast`'s cost) are done only for the other rows
    and scattered back. Row for row the same expressions as :func:`_ts_fast`, so the same values.
    """
    s = pl.col("v").str.strip_chars().str.replace(" ", "T", literal=True)
    parts = values.rename("v").to_frame().select(
        s.str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us")
        .dt.replace_time_zone("UTC").alias("base"),
        s.str.slice(19).alias("tail"))
    tail = parts.get_column("tail")
    valid = (tail.str.len_bytes() == 0) | (tail == "Z")  # null where the value is null
    offset = pl.repeat(0, len(values), dtype=pl.Int64, eager=True)
    other = ~valid & tail.is_not_null()
    if other.any():
        t = pl.col("t")
        rest = tail.filter(other).rename("t").to_frame().select(
            t.str.contains(_TS_FAST_TAIL).alias("valid"), _tail_offset_minutes(t).cast(pl.Int64).alias("offset"))
        idx = other.arg_true()
        valid = valid.scatter(idx, rest.get_column("valid"))
        offset = offset.scatter(idx, rest.get_column("offset"))
    return pl.DataFrame({"base": parts.get_column("base"), "valid": valid, "offset": offset}).select(
        pl.when(pl.col("valid"))
        .then(pl.col("base") - pl.duration(minutes=pl.col("offset"), time_unit="us"))
        .otherwise(None)).to_series()


def parse_timestamps(values: pl.Series) -> pl.Series:
    """Timestamps (UTC, µs) from text: the fast path first, the full parse only for what it left.

    Gives exactly the values of :func:`_ts_from_string`, which costs four parses per value;
    nearly every delivered value takes the fast path (:func:`_ts_fast_values`) instead.
    """
    frame = values.rename("v").to_frame()
    out = _ts_fast_values(values)
    todo = out.is_null() & values.is_not_null()
    if todo.any():
        idx = todo.arg_true()
        slow = frame.filter(todo).select(_ts_from_string("v")).to_series()
        out = out.scatter(idx, slow)
    return out.rename(values.name)


def _int_from_string(col: str) -> pl.Expr:
    """Integers from text (the reference): an integer literal, else a float with an integral value.

    ``"3"`` and ``" 3 "`` read directly; ``"3.0"`` and ``"3e0"`` through Float64 when the value is
    finite, integral and below 2**62 in magnitude; anything else is null.
    """
    c = pl.col(col)
    f = c.str.strip_chars().cast(pl.Float64, strict=False)
    integral = f.is_finite() & (f == f.round(0)) & (f.abs() < 2**62)
    direct = c.str.strip_chars().cast(pl.Int64, strict=False)
    return pl.coalesce(direct, pl.when(integral).then(f).cast(pl.Int64, strict=False))


def parse_ints(values: pl.Series) -> pl.Series:
    """Integers (Int64) from text: the direct cast first, the float route only for what it left.

    Gives exactly the values of :func:`_int_from_string`, whose float route (a second parse, a
    rounding and three comparisons per value) is wasted on the integer literals that nearly
    every delivered value is: 148 k ratings took 0.028 s through the expression, 0.003 s here.
    """
    out = values.str.strip_chars().cast(pl.Int64, strict=False)
    todo = out.is_null() & values.is_not_null()
    if todo.any():
        slow = values.filter(todo).rename("v").to_frame().select(_int_from_string("v")).to_series()
        out = out.scatter(todo.arg_true(), slow)
    return out.rename(values.name)


#: Prefix of the hidden columns holding timestamps parsed ahead of the typing select.
_TS_PARSED = "__ts_parsed:"
#: Prefix of the hidden columns holding integers parsed (from text) ahead of the typing select.
_INT_PARSED = "__int_parsed:"


def _typed_expr(col: str, kind: str, dtype: pl.DataType) -> pl.Expr:
    """Expression that types one column from whatever the file delivered.

    A text timestamp or integer column is read from its hidden parsed column (see :func:`type_frame`).
    """
    c = pl.col(col)
    if kind == "timestamp":
        if isinstance(dtype, pl.Datetime):
            e = c if dtype.time_zone else c.dt.replace_time_zone("UTC")
            return e.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        if dtype == pl.Date:
            return c.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return pl.col(_TS_PARSED + col) if dtype == pl.String else pl.lit(None, pl.Datetime("us", "UTC"))
    if kind == "date":
        if dtype == pl.Date:
            return c
        if isinstance(dtype, pl.Datetime):
            return c.dt.date()
        return c.str.strip_chars().str.to_date("%Y-%m-%d", strict=False) if dtype == pl.String \
            else pl.lit(None, pl.Date)
    if kind == "int":
        if dtype.is_integer():
            return c.cast(pl.Int64, strict=False)  # a UInt64 beyond Int64 is unparseable, not a crash
        if not (dtype.is_numeric() or dtype == pl.String):
            # Dates, timestamps and booleans cast to numbers (days, microseconds, 0/1): that is not an int.
            return pl.lit(None, pl.Int64)
        if dtype == pl.String:
            return pl.col(_INT_PARSED + col)  # parse_ints(), i.e. _int_from_string(col)
        f = c.cast(pl.Float64, strict=False)
        integral = f.is_finite() & (f == f.round(0)) & (f.abs() < 2**62)
        return pl.when(integral).then(f).cast(pl.Int64, strict=False)
    if kind == "float":
        if dtype.is_numeric():
            return c.cast(pl.Float64)
        if dtype == pl.String:
            return c.str.strip_chars().cast(pl.Float64, strict=False)
        return pl.lit(None, pl.Float64)
    if kind == "bool":
        if dtype == pl.Boolean:
            return c
        if not castable_to_string(dtype):
            return pl.lit(None, pl.Boolean)
        s = c.cast(pl.String).str.strip_chars().str.to_lowercase()
        return pl.when(s.is_in(_TRUE)).then(True).when(s.is_in(_FALSE)).then(False).otherwise(None)
    # string
    if dtype == pl.String:
        return c
    if not castable_to_string(dtype):
        return pl.lit(None, pl.String)  # lists and structs: unparseable, never a crash
    return c.cast(pl.String, strict=False)


def _present(col: str, dtype: pl.DataType) -> pl.Expr:
    c = pl.col(col)
    if dtype == pl.String:
        return c.is_not_null() & (c.str.strip_chars() != "")
    return c.is_not_null()


def type_frame(raw: pl.DataFrame, source: Source, rel: str, dt: date) -> pl.DataFrame:
    """Type one parsed landing file to the source's canonical schema.

    Adds the lineage columns ``_dt``, ``_file``, ``_row_number`` and a list column
    ``_parse_errors`` with one reason code per value that was present but could not
    be read (``unparseable:<column>``) or is not a finite number
    (``non_finite:<column>``). Missing optional columns become nulls.

    Raises
    ------
    FileRejected
        ``wrong_column_type`` when a whole column cannot be read as its kind.
    """
    n = raw.height
    # Text timestamps and integers are parsed eagerly first (fast path, then the full parse on
    # what is left); the typing select below reads the parsed values from hidden columns.
    parsed = [parse_timestamps(raw.get_column(c.name)).alias(_TS_PARSED + c.name) for c in source.columns
              if c.kind == "timestamp" and raw.schema.get(c.name) == pl.String]
    parsed += [parse_ints(raw.get_column(c.name)).alias(_INT_PARSED + c.name) for c in source.columns
               if c.kind == "int" and raw.schema.get(c.name) == pl.String]
    lf = ((raw.with_columns(parsed) if parsed else raw).lazy().with_row_index("_row_number", offset=1)
          .with_columns(pl.col("_row_number").cast(pl.Int64)))
    schema = raw.schema
    typed_cols: list[pl.Expr] = []
    # One nullable code column per check (cheap); the per-row list is built below only for the
    # few rows that have a code, not for every row.
    codes: list[tuple[str, pl.Expr, str]] = []
    for column in source.columns:
        if column.name not in schema:
            typed_cols.append(pl.lit(None, source.polars_schema()[column.name]).alias(column.name))
            continue
        dtype: pl.DataType = schema[column.name]
        typed = _typed_expr(column.name, column.kind, dtype)
        present = _present(column.name, dtype)
        if column.kind == "float":
            non_finite = present & typed.is_not_null() & ~typed.is_finite()
            codes.append((f"_e{len(codes)}", non_finite, f"non_finite:{column.name}"))
            # NaN / inf is reported once, as non_finite, not also as unparseable.
            bad = present & typed.is_null()
            typed = pl.when(non_finite).then(None).otherwise(typed)
        else:
            bad = present & typed.is_null()
        codes.append((f"_e{len(codes)}", bad, f"unparseable:{column.name}"))
        typed_cols.append(pl.when(present).then(typed).otherwise(None).alias(column.name))
    flags = [name for name, _, _ in codes]
    out = lf.select(
        *typed_cols,
        *[flag.alias(name) for name, flag, _ in codes],
        pl.lit(dt).alias("_dt"),
        pl.lit(rel).alias("_file"),
        pl.col("_row_number"),
    ).collect(engine="in-memory")
    if n >= WRONG_TYPE_MIN_VALUES:
        for name, _, code in codes:
            if not code.startswith("unparseable:"):
                continue
            # bad <= present, so bad == present >= the minimum needs bad >= the minimum: the
            # (dearer) present count is only taken for a column that has that many bad values.
            bad_count = out.get_column(name).sum()
            if bad_count < WRONG_TYPE_MIN_VALUES:
                continue
            col = code.removeprefix("unparseable:")
            present_count = raw.select(_present(col, schema[col]).sum()).item()
            if present_count >= WRONG_TYPE_MIN_VALUES and bad_count == present_count:
                kind = source.column(col).kind
                raise FileRejected(
                    rel, "wrong_column_type",
                    f"column {col} holds no value readable as {kind} "
                    f"({present_count} values, e.g. {_example(raw[col])})",
                    hint=f"deliver {col} as {kind} per the data contract")
    empty = pl.lit([], pl.List(pl.String)).alias("_parse_errors")
    order = [*(c.name for c in source.columns), "_parse_errors", "_dt", "_file", "_row_number"]
    if not flags:
        return out.with_columns(empty).select(order)
    any_bad = out.select(pl.any_horizontal(flags)).to_series()
    if not any_bad.any():
        return out.with_columns(empty).select(order)
    # The lists are built for the dirty rows only, then spread over every row (spread_lists).
    # Splitting the frame into clean and dirty rows and sorting them back together would copy
    # every column (the long texts included) twice.
    dirty = out.select(flags).filter(any_bad).select(
        pl.concat_list([pl.when(pl.col(name)).then(pl.lit(code)) for name, _, code in codes])
        .list.drop_nulls().alias("_parse_errors")).to_series()
    return out.with_columns(spread_lists(any_bad, dirty)).select(order)


def spread_lists(flags: pl.Series, lists: pl.Series) -> pl.Series:
    """A list column with a row per flag: the k-th flagged row holds ``lists[k]``, every other ``[]``.

    For per-row reason lists, which only a few rows have. The column is assembled from Arrow
    offsets: gathering it from ``[[], *lists]`` by index (the same values) took 1.1 s and held
    0.8 GB for 5 M rows with 10 k lists, this 0.08 s.

    Parameters
    ----------
    flags
        One boolean per output row; as many true values as ``lists`` has rows.
    lists
        A ``List`` series: the lists of the flagged rows, in row order.
    """
    import numpy as np

    lengths = np.zeros(len(flags), dtype=np.int64)
    lengths[flags.arg_true().to_numpy()] = lists.list.len().to_numpy()
    offsets = np.zeros(len(flags) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = lists.to_arrow().flatten()  # the values only: an empty list adds none
    return pl.Series(lists.name, pa.LargeListArray.from_arrays(pa.array(offsets), values))


def _example(values: pl.Series) -> str:
    """A short example of a column's values for an error message, never quoting text.

    Text may be a personal identifier (a shifted CSV puts e-mails in ``rating``), so it is
    described by its length; dates, numbers and booleans are shown as they are.
    """
    v = values.drop_nulls().head(1).to_list()
    if not v:
        return "null"
    if isinstance(v[0], str):
        return f"a text of {len(v[0])} characters"
    if isinstance(v[0], (list, dict)):
        return f"a {type(v[0]).__name__}"
    text = repr(v[0])
    return text if len(text) <= 60 else text[:57] + "..."


def empty_typed(source: Source) -> pl.DataFrame:
    """A typed frame with no rows (for empty or header-only files)."""
    schema = dict(source.polars_schema())
    schema.update({"_parse_errors": pl.List(pl.String), "_dt": pl.Date(), "_file": pl.String(),
                   "_row_number": pl.Int64()})
    return pl.DataFrame(schema=schema)


def pseudonymise(df: pl.DataFrame, columns: list[str], key: bytes) -> pl.DataFrame:
    """Replace personal identifiers with a keyed hash (HMAC-SHA256, 24 hex chars).

    The same person maps to the same pseudonym under one key, so distinct-buyer
    counts and campaign detection still work, but the identifier cannot be
    recovered without the key. Each distinct value is hashed once.

    Parameters
    ----------
    df
        The parsed landing frame.
    columns
        The personal columns; those absent from ``df`` are skipped.
    key
        The HMAC key.

    Returns
    -------
    pl.DataFrame
        ``df`` with each personal column replaced, in place and in the same row order, by
        ``"p_" + HMAC-SHA256(key, value)`` hex digest's first 24 characters (null stays null).

    Notes
    -----
    The pseudonyms are joined against data already in the lake, so their values never change;
    only how they are computed does:

    - The distinct values are mapped back to the rows with a left join (``maintain_order="left"``),
      not ``replace_strict``: on a file of ~150 k mostly distinct ids (one Polars thread) the
      join takes 0.02–0.03 s against 0.04 s for ``replace_strict`` on a single-chunk column and
      1.5 s on the 77-chunk column ``read_ndjson`` returns.
    - The Python loop, the part that cannot be vectorised without a new dependency, does only
      the HMAC itself, from precomputed pads (:func:`_hmac_hex24_many`): 0.11 s against 0.13 s
      for a loop that also encoded, hex-formatted and prefixed each value, on 145 k ids.
    """
    out = df
    inner, outer = _hmac_pads(key)
    for col in columns:
        if col not in df.columns:
            continue
        values = df.get_column(col)
        if values.dtype != pl.String:
            # A scalar (e.g. an integer id) is hashed by its string form; a nested value has no
            # faithful identity and is dropped (the row is then quarantined as missing it).
            values = values.cast(pl.String, strict=False) if castable_to_string(values.dtype) \
                else pl.Series(col, [None] * len(values), pl.String)
        uniques = values.drop_nulls().unique()
        mapping = pl.DataFrame({"v": uniques, "h": _hmac_hex24_many(inner, outer, uniques)})
        hashed = (values.rename("v").to_frame()
                  .join(mapping, on="v", how="left", maintain_order="left")
                  .get_column("h"))
        out = out.with_columns(hashed.alias(col))
    return out


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) inner and outer hash states for ``key``, computed once."""
    block = 64
    k = hashlib.sha256(key).digest() if len(key) > block else key
    k = k.ljust(block, b"\0")
    return hashlib.sha256(bytes(b ^ 0x36 for b in k)), hashlib.sha256(bytes(b ^ 0x5C for b in k))


def _hmac_hex24_many(inner: Any, outer: Any, values: pl.Series) -> pl.Series:
    """``"p_"`` + 24 hex of HMAC-SHA256 of every value of a String series (without nulls).

    Byte-identical to ``"p_" + hmac.new(key, v.encode(), sha256).hexdigest()[:24]`` per value:
    Polars strings are valid UTF-8, so the ``Binary`` cast gives exactly ``v.encode()``;
    ``hexdigest()[:24]`` is the hex of the digest's first 12 bytes, and ``bin.encode("hex")`` is
    lower-case like ``hexdigest``. The loop keeps only the hashing: encoding, slicing, hex and the
    prefix run in Polars. Measured and slower: ``hmac.digest`` (a fresh key schedule per call),
    copies of an OpenSSL HMAC object, ``map`` over a closure, CPython's built-in ``_sha256``, and
    hashing ``ipad + value`` instead of copying the precomputed state.
    """
    icopy, ocopy = inner.copy, outer.copy  # bound once: no attribute lookup per value
    digests: list[bytes] = []
    append = digests.append
    for v in values.cast(pl.Binary).to_list():
        i = icopy()
        i.update(v)
        o = ocopy()
        o.update(i.digest())
        append(o.digest())
    hexed = pl.Series(values.name, digests, dtype=pl.Binary).bin.slice(0, 12).bin.encode("hex")
    return ("p_" + hexed).rename(values.name)


def business_day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC instants where a business day starts and the next one starts."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def event_day_expr(col: str, tz: str) -> pl.Expr:
    """The business day (in ``tz``) of a UTC timestamp column."""
    return pl.col(col).dt.convert_time_zone(tz).dt.date()
