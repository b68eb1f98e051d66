"""The published outputs as analysts get them: documented, well-formed Parquet, queryable as documented.

One small marketplace is run for three dates (so there is history); then:

* ``docs/data-dictionary.md`` documents exactly the columns (name, order, type,
  nullability) of the Arrow schemas *and* of the published files, and the manifest's keys;
* every Parquet file is zstd-compressed, sorted, has row-group statistics and carries
  ``schema_version`` / ``policy_version`` / ``run_id`` in its metadata;
* Hive partitioning works in DuckDB and Polars;
* every ``sql`` and ``python`` block of ``docs/queries.md`` (and of the README's
  "Query it" section) runs against the outputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.landing import small_marketplace, write_rows
from transforms.pipeline import run_date
from transforms.schemas import ACTIONS_SCHEMA, QUARANTINE_SCHEMA, SCORES_SCHEMA
from transforms.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DICTIONARY = REPO / "docs" / "data-dictionary.md"
QUERIES = REPO / "docs" / "queries.md"
README = REPO / "README.md"
SCHEMAS = {"scores": SCORES_SCHEMA, "actions": ACTIONS_SCHEMA, "quarantine": QUARANTINE_SCHEMA}


@dataclass(frozen=True)
class Published:
    root: Path
    days: list[date]

    @property
    def last(self) -> date:
        return self.days[-1]

    def files(self, table: str) -> list[Path]:
        pattern = "*/*/*.parquet" if table == "quarantine" else "*/*.parquet"
        return sorted((self.root / table).glob(pattern))

    def manifest(self, day: date) -> dict:  # type: ignore[type-arg]
        return json.loads((self.root / "runs" / f"score_date={day}" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    root = tmp_path_factory.mktemp("outputs") / "lake"
    last = small_marketplace(root, days=4, merchants=6)
    # A few bad rows so quarantine has content, delivered on the last day.
    write_rows(root, "reviews", last, [
        {"review_id": f"BAD{i}", "merchant_id": "M1", "order_id": None, "reviewer_id": "u", "rating": 9,
         "text": "x", "created_at": f"{last}T01:00:00Z", "verified_purchase": True} for i in range(2)]
        + [{"review_id": f"OK{i}", "merchant_id": f"M{i % 6}", "order_id": None, "reviewer_id": f"v{i}",
            "rating": 1 + i % 5, "text": "ok", "created_at": f"{last}T01:00:00Z", "verified_purchase": True}
           for i in range(60)], fmt="jsonl", name="extra")
    settings = Settings(root=str(root))
    days = [last - timedelta(days=2), last - timedelta(days=1), last]
    for d in days:
        assert run_date(d, settings).exit_code == 0
    return Published(root, days)


# ------------------------------------------------------------------ data dictionary
def _arrow_type(t: pa.DataType) -> str:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_arrow_type(t.value_type)}>"
    names = {pa.float64(): "float64", pa.date32(): "date32", pa.string(): "string", pa.large_string(): "string",
             pa.bool_(): "bool", pa.int64(): "int64", pa.int32(): "int32"}
    return names.get(t, str(t))


def _as_documented(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(f.name, _arrow_type(f.type) + (", nullable" if f.nullable else "")) for f in schema]


def _doc_tables(text: str) -> dict[str, list[list[str]]]:
    """Rows of the first Markdown table under each ``## heading``, cells stripped of backticks."""
    out: dict[str, list[list[str]]] = {}
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        name = section.splitlines()[0].strip()
        rows = []
        in_table = False
        for line in section.splitlines()[1:]:
            if line.startswith("|"):
                in_table = True
                cells = [c.strip().strip("`").replace("&lt;", "<").replace("&gt;", ">")
                         for c in line.strip().strip("|").split("|")]
                rows.append(cells)
            elif in_table:
                break
        out[name] = rows[2:]  # skip the header and the --- row
    return out


def test_the_data_dictionary_documents_exactly_the_schemas_and_the_files(published: Published) -> None:
    tables = _doc_tables(DICTIONARY.read_text(encoding="utf-8"))
    for table, schema in SCHEMAS.items():
        documented = [(r[0], r[1]) for r in tables[table]]
        assert documented == _as_documented(schema), f"docs/data-dictionary.md ({table}) is out of step with " \
                                                     f"transforms/schemas.py"
        assert all(len(r) == 4 and r[2] and r[3] for r in tables[table]), f"{table}: unit and meaning are required"
        files = published.files(table)
        assert files, table
        for f in files:
            assert _as_documented(pq.read_schema(f)) == documented, f
    # Manifest keys: a published run has every documented key, and no other.
    keys = {r[0] for r in tables["manifest"]}
    assert set(published.manifest(published.last)) == keys


# ---------------------------------------------------------------- Parquet hygiene
@pytest.mark.parametrize("table", ["scores", "actions", "quarantine"])
def test_parquet_files_are_analyst_grade(published: Published, table: str) -> None:
    for path in published.files(table):
        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata or {}
        expected_keys = {b"schema_version", b"run_id"} | ({b"policy_version"} if table != "quarantine" else set())
        assert expected_keys <= set(meta), (path, sorted(meta))
        rows = pf.read()
        if rows.num_rows:
            assert set(rows.column("run_id").to_pylist()) == {meta[b"run_id"].decode()}
            if table != "quarantine":
                assert set(rows.column("policy_version").to_pylist()) == {meta[b"policy_version"].decode()}
        for rg in range(pf.metadata.num_row_groups):
            group = pf.metadata.row_group(rg)
            for c in range(group.num_columns):
                col = group.column(c)
                assert col.compression == "ZSTD", (path, col.path_in_schema)
                assert col.is_stats_set or group.num_rows == 0, (path, col.path_in_schema)
            key = group.column(pf.schema_arrow.get_field_index("merchant_id" if table != "quarantine" else "file"))
            assert group.num_rows == 0 or key.statistics.has_min_max
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
        order = ["merchant_id"] if table != "quarantine" else ["file", "row_number"]
        assert frame.equals(frame.sort(order, maintain_order=True)), f"{path} is not sorted by {order}"
        if table != "quarantine":
            assert frame.get_column("merchant_id").is_unique().all()
    if table == "scores":
        for d in published.days:
            m = published.manifest(d)
            f = next((published.root / "scores" / f"score_date={d}").glob("*.parquet"))
            assert pq.read_schema(f).metadata[b"run_id"].decode() == m["run_id"]
            assert pq.read_schema(f).metadata[b"policy_version"].decode() == m["policy"]["version"]


def test_hive_partitioning_works_in_duckdb_and_polars(published: Published) -> None:
    root = published.root
    expected = {d: published.manifest(d)["outputs"]["scores"]["rows"] for d in published.days}
    rows = duckdb.sql(f"SELECT score_date, count(*) FROM read_parquet('{root}/scores/*/*.parquet', "
                      "hive_partitioning = true) GROUP BY score_date ORDER BY score_date").fetchall()
    assert dict(rows) == expected
    kind = duckdb.sql(f"SELECT typeof(score_date) FROM read_parquet('{root}/scores/*/*.parquet', "
                      "hive_partitioning = true) LIMIT 1").fetchall()
    assert kind == [("DATE",)]
    scan = pl.scan_parquet(root / "scores", hive_partitioning=True)
    assert scan.collect_schema()["score_date"] == pl.Date
    counts = scan.group_by("score_date").len().collect()
    assert dict(counts.iter_rows()) == expected
    # A filter on the partition column reads only that day.
    one = scan.filter(pl.col("score_date") == published.last).collect()
    assert one.height == expected[published.last]
    q = duckdb.sql(f"SELECT DISTINCT dt FROM read_parquet('{root}/quarantine/*/*/*.parquet', "
                   "hive_partitioning = true)").fetchall()
    assert (published.last,) in q
    assert pl.scan_parquet(root / "actions", hive_partitioning=True).collect().height >= 0


# ------------------------------------------------------------------ query examples
def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _run_sql(block: str) -> list[list[tuple]]:  # type: ignore[type-arg]
    results = []
    for statement in (s.strip() for s in block.split(";")):
        body = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()
        if body:
            results.append(duckdb.sql(body).fetchall())
    return results


def _run_python(block: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "<docs>", "exec"), {"__name__": "__docs__"})
    return out.getvalue()


def test_every_query_in_docs_queries_runs(published: Published) -> None:
    text = QUERIES.read_text(encoding="utf-8")
    assert "{root}" in text
    assert "{date}" in text
    subs = {"{root}": str(published.root), "{date}": published.last.isoformat(), "{merchant_id}": "M1"}

    def fill(block: str) -> str:
        for k, v in subs.items():
            block = block.replace(k, v)
        return block

    sql, python = _blocks(text, "sql"), _blocks(text, "python")
    assert len(sql) >= 5
    assert len(python) >= 5
    for block in sql:
        results = _run_sql(fill(block))
        assert results, block
        if "{merchant_id}" in block:  # a merchant's history covers every published date
            assert len(results[0]) == len(published.days)
        if "GROUP BY category, tier" in block or "parquet_kv_metadata" in block or "previous AS" in block:
            assert results[0], block
    for block in python:
        printed = _run_python(fill(block))
        assert printed.strip(), block


def test_the_readme_query_examples_run(published: Published) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Query it"):]
    section = section[:section.index("\n## ")]
    day = published.last
    subs = {"data/lake": str(published.root), "2026-03-01": day.isoformat(),
            "date(2026, 3, 1)": f"date({day.year}, {day.month}, {day.day})", "M000042": "M1"}

    def fill(block: str) -> str:
        for k, v in subs.items():
            block = block.replace(k, v)
        return block

    sql, python = _blocks(section, "sql"), _blocks(section, "python")
    assert sql
    assert python
    for block in sql:
        assert all(r for r in _run_sql(fill(block))[1:]), block  # the history query finds the merchant
    for block in python:
        assert _run_python(fill(block)).strip()


# ------------------------------------------------------------------------ the report
def test_the_report_is_published_with_the_manifest(published: Published) -> None:
    for d in published.days:
        m = published.manifest(d)
        assert m["outputs"]["report"] == f"runs/score_date={d}/report.html"
        page = (published.root / m["outputs"]["report"]).read_text(encoding="utf-8")
        assert m["run_id"] in page
        assert 'href="data_docs/index.html"' in page
        assert (published.root / "runs" / f"score_date={d}" / "data_docs" / "index.html").exists()
    # The first date has nothing to compare with; later ones draw transitions and movers.
    first = (published.root / "runs" / f"score_date={published.days[0]}" / "report.html").read_text()
    assert "No earlier published date" in first
    later = (published.root / "runs" / f"score_date={published.last}" / "report.html").read_text()
    assert "Tier transition matrix" in later
