"""Property: random row corruption never loses a row and never crashes a run.

Hypothesis corrupts random cells of a small delivery (junk text, empty values, huge
text, unicode, wrong types, NaN and infinities) in any landing format, lands it on the
score date of a tiny marketplace and runs the real pipeline in-process. Whatever it
draws:

* the run ends with exit code 0 or 3 (no exception, no traceback in the message);
* every source and delivery day balances: read = accepted + quarantined + duplicate + superseded;
* every row written is read, unless its whole file was rejected, and then the file is
  named in the manifest and the run exits 3 (``gate.file_failure: fail_run``).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.landing import START, small_marketplace
from tests.malformed.builders import good_row, manifest, parquet_bytes, unbalanced, write_bytes
from transforms.pipeline import run_date
from transforms.schemas import SOURCES
from transforms.settings import Settings

pytestmark = pytest.mark.slow

DAYS = 2
D = START + timedelta(days=DAYS - 1)
#: Rows small_marketplace(days=2, merchants=3) delivers per source and day.
BASELINE = {"merchants": {START: 3}, "sales": dict.fromkeys((START, D), 3), "reviews": dict.fromkeys((START, D), 3),
            "complaints": dict.fromkeys((START, D), 1), "returns": dict.fromkeys((START, D), 1)}
FUZZED = ("sales", "reviews", "complaints", "returns")

_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
_tricky = st.sampled_from([
    "", " ", "\t", "null", "None", "NaN", "nan", "-inf", "Infinity", "1e309", "-0", "0x1F", "1,5", "٣", "５",
    "2026-02-30", "2026-02-30T10:00:00Z", "2026-03-01T25:00:00", "2026-13-01", "9999-12-31T23:59:59Z",
    "0001-01-01", "2026-03-01T08:00:00+25:00", "yesterday", '"', '""', ",", "\n", "\r", "\r\n", "a\rb",
    "\ufeff", "\u202e", "e\u0301", "🙂" * 3, "与描述不符", "'; DROP TABLE x; --", "\x00",
])
JUNK = st.one_of(
    st.none(),
    _tricky,
    _text,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just("x" * 10_001),
    st.just("好" * 10_001),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2),
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, str, list[dict[str, Any]]]:
    """A source, a format and rows of that source with random cells corrupted."""
    source = draw(st.sampled_from(FUZZED))
    fmt = draw(st.sampled_from(["csv", "jsonl", "parquet", "csv.gz", "jsonl.gz"]))
    n = draw(st.integers(1, 8))
    cols = SOURCES[source].names
    rows = [good_row(source, D, i, "Z") for i in range(n)]
    for _ in range(draw(st.integers(1, 2 * n))):
        row = draw(st.integers(0, n - 1))
        rows[row][draw(st.sampled_from(cols))] = draw(JUNK)
    return source, fmt, rows


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _encode(fmt: str, rows: list[dict[str, Any]]) -> bytes:
    import gzip

    if fmt.startswith("csv"):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\r\n")
        w.writeheader()
        w.writerows([{k: _cell(v) for k, v in r.items()} for r in rows])
        data = buf.getvalue().encode("utf-8", "surrogatepass")
    elif fmt.startswith("jsonl"):
        data = "".join(json.dumps(r, ensure_ascii=False, allow_nan=True) + "\n" for r in rows).encode()
    else:
        try:  # typed columns when every value of a column has one type, else all text
            return parquet_bytes(pa.Table.from_pylist(rows))
        # NotImplemented: a column of empty dicts is a struct without fields, which Parquet cannot hold.
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            return parquet_bytes(pa.Table.from_pylist([{k: None if v is None else _cell(v) for k, v in r.items()}
                                                      for r in rows]))
    return gzip.compress(data, mtime=0) if fmt.endswith(".gz") else data


@settings(max_examples=25, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(delivery=deliveries())
def test_corrupted_rows_are_never_lost_and_never_crash_a_run(delivery: tuple[str, str, list[dict[str, Any]]]) -> None:
    source, fmt, rows = delivery
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lake"
        small_marketplace(root, days=DAYS)
        name = f"fuzz.{fmt}"
        write_bytes(root, source, D, name, _encode(fmt, rows))
        result = run_date(D, Settings(root=str(root)))
        assert result.exit_code in (0, 3), result.message
        assert "Traceback" not in result.message
        m = manifest(root, D)
        assert m["status"] == ("published" if result.exit_code == 0 else "failed")
        assert unbalanced(m) == []
        failed = {f["file"] for f in m["sources"][source]["file_failures"]}
        path = f"landing/{source}/dt={D}/{name}"
        written = dict(BASELINE[source])
        if path in failed:
            assert result.exit_code == 3
            assert path in result.message
        else:
            written[D] += len(rows)
        by_day = m["sources"][source]["by_delivery_day"]
        assert {day: e["read"] for day, e in by_day.items()} == {d.isoformat(): n for d, n in written.items()}
        for other in set(SOURCES) - {source}:
            read = {day: e["read"] for day, e in m["sources"][other]["by_delivery_day"].items()}
            assert read == {d.isoformat(): n for d, n in BASELINE[other].items()}
        if result.exit_code == 3:
            assert not (root / "scores" / f"score_date={D}").exists()
