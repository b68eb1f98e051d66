"""Staging: landing files to typed, canonical, pseudonymised frames.

Pure functions: bytes or Arrow tables in, Polars frames out. Each row keeps its
lineage (delivery day, file, 1-based row number) so a rejected row can always be
traced back to where it came from, and every row that is read is accounted for:
a value that cannot be typed becomes a row-level parse error, never a silent null.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa

from transforms.errors import FileRejected
from transforms.schemas import SOURCES, Source

#: A column is judged "of the wrong type" (a file-level failure) when at least this
#: many values are present and not one of them can be read as the column's kind.
WRONG_TYPE_MIN_VALUES = 3

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
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
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


def parse_csv(data: bytes, rel: str, encodings: list[str]) -> tuple[pl.DataFrame, str]:
    """Parse RFC 4180 CSV (header row, double-quote quoting) into string columns."""
    if not data.strip(b"\xef\xbb\xbf \r\n\t"):
        return pl.DataFrame(), "utf-8"
    text, enc = decode_text(data, rel, encodings)
    try:
        df = pl.read_csv(io.BytesIO(text.encode("utf-8")), infer_schema=False, quote_char='"',
                         has_header=True, raise_if_empty=False, truncate_ragged_lines=False)
    except pl.exceptions.PolarsError as exc:
        raise FileRejected(rel, "malformed_csv", f"the CSV cannot be parsed ({str(exc).splitlines()[0]})",
                           hint="check quoting and the number of fields per line, then re-deliver") from None
    return df, enc


def parse_jsonl(data: bytes, rel: str, encodings: list[str]) -> tuple[pl.DataFrame, str]:
    """Parse JSON Lines: every key present in any line becomes a string column."""
    text, enc = decode_text(data, rel, encodings)
    if not text.strip():
        return pl.DataFrame(), enc
    raw = text.encode("utf-8")
    try:
        keys = pl.scan_ndjson(io.BytesIO(raw), infer_schema_length=None).collect_schema().names()
        df = pl.read_ndjson(io.BytesIO(raw), schema=dict.fromkeys(keys, pl.String))
    except pl.exceptions.PolarsError as exc:
        raise FileRejected(rel, "malformed_jsonl",
                           f"a line is not a JSON object ({str(exc).splitlines()[0][:200]})",
                           hint="every line must be one JSON object; fix or re-deliver the file") from None
    return df, enc


def parse_parquet(table: pa.Table, rel: str) -> pl.DataFrame:
    """Convert a landing Parquet table, normalising compatible physical types."""
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
        raise FileRejected(rel, "missing_column", f"required column(s) {', '.join(missing)} are missing",
                           hint=f"the {source.name} contract requires: {', '.join(source.required)}")
    return sorted(c for c in df.columns if c not in source.names)


def _ts_from_string(col: str) -> pl.Expr:
    s = pl.col(col).str.strip_chars().str.replace(" ", "T", literal=True)
    with_offset = s.str.replace(r"Z$", "+00:00").str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_unit="us")
    naive = s.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC")
    minutes = s.str.to_datetime("%Y-%m-%dT%H:%M", strict=False, time_unit="us").dt.replace_time_zone("UTC")
    day = s.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.coalesce(with_offset.dt.convert_time_zone("UTC"), naive, minutes, day)


def _typed_expr(col: str, kind: str, dtype: pl.DataType) -> pl.Expr:
    """Expression that types one column from whatever the file delivered."""
    c = pl.col(col)
    if kind == "timestamp":
        if isinstance(dtype, pl.Datetime):
            e = c if dtype.time_zone else c.dt.replace_time_zone("UTC")
            return e.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        if dtype == pl.Date:
            return c.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return _ts_from_string(col) if dtype == pl.String else pl.lit(None, pl.Datetime("us", "UTC"))
    if kind == "date":
        if dtype == pl.Date:
            return c
        if isinstance(dtype, pl.Datetime):
            return c.dt.date()
        return c.str.strip_chars().str.to_date("%Y-%m-%d", strict=False) if dtype == pl.String \
            else pl.lit(None, pl.Date)
    if kind == "int":
        if dtype.is_integer():
            return c.cast(pl.Int64)
        f = c.cast(pl.Float64, strict=False) if dtype != pl.String else \
            c.str.strip_chars().cast(pl.Float64, strict=False)
        integral = f.is_finite() & (f == f.round(0)) & (f.abs() < 2**62)
        if dtype == pl.String:
            direct = c.str.strip_chars().cast(pl.Int64, strict=False)
            return pl.coalesce(direct, pl.when(integral).then(f).cast(pl.Int64, strict=False))
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
        s = c.cast(pl.String).str.strip_chars().str.to_lowercase()
        return pl.when(s.is_in(_TRUE)).then(True).when(s.is_in(_FALSE)).then(False).otherwise(None)
    # string
    if dtype == pl.String:
        return c
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
    lf = raw.lazy().with_row_index("_row_number", offset=1).with_columns(pl.col("_row_number").cast(pl.Int64))
    schema = raw.schema
    typed_cols: list[pl.Expr] = []
    error_exprs: list[pl.Expr] = []
    for column in source.columns:
        if column.name not in schema:
            typed_cols.append(pl.lit(None, source.polars_schema()[column.name]).alias(column.name))
            continue
        dtype: pl.DataType = schema[column.name]
        typed = _typed_expr(column.name, column.kind, dtype)
        present = _present(column.name, dtype)
        if column.kind == "string":
            typed = pl.when(present).then(typed).otherwise(None)
            typed_cols.append(typed.alias(column.name))
            continue
        if column.kind == "float":
            non_finite = present & typed.is_not_null() & ~typed.is_finite()
            error_exprs.append(pl.when(non_finite).then(pl.lit(f"non_finite:{column.name}")))
            typed = pl.when(non_finite).then(None).otherwise(typed)
        bad = present & typed.is_null()
        error_exprs.append(pl.when(bad).then(pl.lit(f"unparseable:{column.name}")))
        typed_cols.append(pl.when(present).then(typed).otherwise(None).alias(column.name))
    errors = pl.concat_list(error_exprs).list.drop_nulls() if error_exprs else pl.lit([], pl.List(pl.String))
    out = lf.select(
        *typed_cols,
        errors.alias("_parse_errors"),
        pl.lit(dt).alias("_dt"),
        pl.lit(rel).alias("_file"),
        pl.col("_row_number"),
    ).collect(engine="in-memory")
    if n >= WRONG_TYPE_MIN_VALUES:
        for column in source.columns:
            if column.kind == "string" or column.name not in schema:
                continue
            code = f"unparseable:{column.name}"
            present_count = raw.select(_present(column.name, schema[column.name]).sum()).item()
            if present_count >= WRONG_TYPE_MIN_VALUES:
                bad_count = out.select(pl.col("_parse_errors").list.contains(code).sum()).item()
                if bad_count == present_count:
                    raise FileRejected(
                        rel, "wrong_column_type",
                        f"column {column.name} holds no value readable as {column.kind} "
                        f"({present_count} values, e.g. {raw[column.name].drop_nulls()[0]!r})",
                        hint=f"deliver {column.name} as {column.kind} per the data contract")
    return out


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
    """
    out = df
    for col in columns:
        if col not in df.columns:
            continue
        uniques = df.get_column(col).drop_nulls().unique()
        mapping = {v: "p_" + hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:24] for v in uniques.to_list()}
        out = out.with_columns(pl.col(col).replace_strict(mapping, default=None, return_dtype=pl.String))
    return out


def business_day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC instants where a business day starts and the next one starts."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def event_day_expr(col: str, tz: str) -> pl.Expr:
    """The business day (in ``tz``) of a UTC timestamp column."""
    return pl.col(col).dt.convert_time_zone(tz).dt.date()


def row_hash_expr(source: Source) -> pl.Expr:
    """A content hash over the contract columns, for duplicate detection."""
    return pl.struct([pl.col(c) for c in source.names]).hash(seed=0x5EED)


SOURCES_BY_NAME = SOURCES
