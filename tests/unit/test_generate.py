"""Tests of the synthetic marketplace generator (transforms.generate).

Small runs only (60 merchants x 20 days, 500 merchants x 3 days) so the module stays fast.
The checks read the landing files back independently of the generator's own code.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.errors import ConfigError
from transforms.generate import (
    ARCHETYPES,
    CONTRACT_COLUMNS,
    SOURCES,
    GenerationSummary,
    generate_marketplace,
)

SMALL = {"merchants": 60, "days": 20, "seed": 11, "malformed_row_share": 0.01}
LAYOUT = re.compile(
    r"landing/(?P<source>[a-z]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/[^/]+\."
    r"(?P<ext>csv|csv\.gz|jsonl|jsonl\.gz|parquet)"
)
CJK = re.compile(r"[\u4e00-\u9fff]")


def _generate(root: Path, **kwargs: object) -> GenerationSummary:
    return generate_marketplace(root, show_progress=False, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    root = tmp_path_factory.mktemp("market") / "lake"
    return root, _generate(root, **SMALL)


def _landing_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "landing").rglob("*") if p.is_file())


def _decode(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _read(path: Path) -> pl.DataFrame:
    """Read any landing file with every column as text (timestamps as ISO strings)."""
    if path.name.endswith(".parquet"):
        frame = pl.read_parquet(path)
        return frame.with_columns(
            pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(t, pl.Datetime)
            else pl.col(c).cast(pl.String)
            for c, t in frame.schema.items()
        )
    data = _decode(path)
    if ".csv" in path.name:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("gb18030")
        return pl.read_csv(io.StringIO(text), infer_schema=False)
    frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    return frame.with_columns(pl.col(c).cast(pl.String) for c in frame.columns)


def _load(root: Path, source: str) -> pl.DataFrame:
    frames = []
    for path in sorted((root / "landing" / source).glob("dt=*/*")):
        rel = path.relative_to(root).as_posix()
        frames.append(
            _read(path).with_row_index("row_number", offset=1).with_columns(
                dt=pl.lit(path.parent.name[3:]), file=pl.lit(rel)
            )
        )
    return pl.concat(frames, how="vertical")


def _ts(value: str | None) -> datetime | None:
    """ISO 8601 with Z, +08:00 or no offset (= UTC) -> aware UTC datetime."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _clean(root: Path, frame: pl.DataFrame) -> pl.DataFrame:
    """Drop the rows recorded as injected faults."""
    bad = pl.read_parquet(root / "truth" / "malformed.parquet").select("file", "row_number")
    return frame.join(bad, on=["file", "row_number"], how="anti")


def test_summary_counts_and_dates(small: tuple[Path, GenerationSummary]) -> None:
    root, summary = small
    assert summary.end == summary.start + timedelta(days=SMALL["days"] - 1)
    assert set(summary.rows_by_source) == set(SOURCES)
    assert all(summary.rows_by_source[s] > 0 for s in SOURCES)
    files = _landing_files(root)
    assert len(files) == sum(summary.files_by_source.values())
    dts = {p.parent.name for p in files}
    assert min(dts) == f"dt={summary.start}"
    assert max(dts) == f"dt={summary.end}"


def test_same_seed_gives_identical_bytes(
    small: tuple[Path, GenerationSummary], tmp_path: Path
) -> None:
    root, _ = small
    again = tmp_path / "again"
    _generate(again, **SMALL)

    def digest(base: Path) -> dict[str, str]:
        return {
            p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }

    assert digest(root) == digest(again)


def test_layout_formats_and_columns_match_contract(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    seen_ext: dict[str, set[str]] = {s: set() for s in SOURCES}
    for path in _landing_files(root):
        match = LAYOUT.fullmatch(path.relative_to(root).as_posix())
        assert match, path
        source = match["source"]
        assert source in SOURCES
        date.fromisoformat(match["dt"])
        seen_ext[source].add(match["ext"])
        assert tuple(_read(path).columns) == CONTRACT_COLUMNS[source], path
    assert all(exts == {"csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"}
               for exts in seen_ext.values()), seen_ext


def test_parquet_types(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    schema = pq.read_schema(next((root / "landing" / "complaints").rglob("*.parquet")))
    assert schema.field("opened_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("first_response_at").type == pa.timestamp("us", tz="UTC")
    schema = pq.read_schema(next((root / "landing" / "sales").rglob("*.parquet")))
    assert schema.field("date").type == pa.date32()
    assert schema.field("orders").type == pa.int64()
    schema = pq.read_schema(next((root / "landing" / "reviews").rglob("*.parquet")))
    assert schema.field("verified_purchase").type == pa.bool_()


def test_csv_is_rfc4180_and_row_counts_match(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    files = pl.read_parquet(root / "truth" / "files.parquet")
    rows = dict(zip(files["file"].to_list(), files["rows"].to_list(), strict=True))
    multiline = 0
    for path in _landing_files(root):
        if ".csv" not in path.name:
            continue
        data = _decode(path)
        encoding = "gb18030" if files.filter(
            pl.col("file") == path.relative_to(root).as_posix()
        )["encoding"][0] == "gb18030" else "utf-8-sig"
        records = list(csv.reader(io.StringIO(data.decode(encoding), newline="")))
        assert len(records) - 1 == rows[path.relative_to(root).as_posix()]
        assert all(len(r) == len(records[0]) for r in records)
        multiline += sum(any("\n" in field for field in r) for r in records)
    assert multiline > 0  # embedded newlines exist and survive quoting


def test_all_archetypes_present_at_500(tmp_path: Path) -> None:
    _generate(tmp_path, merchants=500, days=3, seed=3)
    truth = pl.read_parquet(tmp_path / "truth" / "merchants.parquet")
    assert truth.height == 500
    counts = dict(truth.group_by("archetype").len().iter_rows())
    assert set(counts) == set(ARCHETYPES)
    assert 0.5 <= counts["good"] / 500 <= 0.6
    assert all(15 <= counts[a] <= 35 for a in ARCHETYPES if a != "good")
    assert truth["category"].n_unique() >= 6
    bad = truth.filter(pl.col("is_bad"))
    assert bad["bad_dimension"].null_count() == 0
    good_like = truth.filter(
        pl.col("archetype").is_in(["good", "bombed_good", "collective_dispute"])
    )
    assert good_like["bad_dimension"].null_count() == good_like.height
    assert truth.filter(pl.col("archetype") == "review_buyer")["bad_dimension"].unique().to_list() \
        == ["quality"]
    assert good_like["true_conduct_score"].mean() > bad["true_conduct_score"].mean() + 15
    assert truth["true_conduct_score"].is_between(0, 100).all()
    unlicensed = truth.filter(pl.col("archetype") == "unlicensed")
    assert set(unlicensed["category"]) <= {"food", "baby", "beauty"}
    assert set(unlicensed["licence_state"]) <= {"expired", "missing"}
    attacks = pl.read_parquet(tmp_path / "truth" / "attacks.parquet")
    assert set(attacks["kind"]) == {"review_campaign", "review_bombing", "collective_complaint"}


def test_truth_lives_outside_landing(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    for name in ("merchants", "attacks", "malformed", "files"):
        assert (root / "truth" / f"{name}.parquet").is_file()
    assert {p.name for p in (root / "landing").iterdir()} == set(SOURCES)
    assert not any("truth" in p.as_posix() for p in _landing_files(root))


def test_malformed_share_and_records(small: tuple[Path, GenerationSummary]) -> None:
    root, summary = small
    malformed = pl.read_parquet(root / "truth" / "malformed.parquet")
    assert malformed.height == summary.malformed_rows > 0
    share = summary.malformed_rows / sum(summary.rows_by_source.values())
    assert 0.5 * SMALL["malformed_row_share"] <= share <= 2 * SMALL["malformed_row_share"]
    assert malformed["source"].n_unique() >= 3
    files = pl.read_parquet(root / "truth" / "files.parquet").select("file", "rows")
    joined = malformed.join(files, on="file", how="left")
    assert joined["rows"].null_count() == 0
    assert (joined["row_number"] <= joined["rows"]).all()
    # Spot-check that recorded rows really are broken.
    reviews = _load(root, "reviews").join(
        malformed.filter(pl.col("kind") == "rating_out_of_range"), on=["file", "row_number"]
    )
    assert reviews["rating"].is_in(["0", "6"]).all()


def test_default_share_is_small(tmp_path: Path) -> None:
    summary = _generate(tmp_path, merchants=60, days=10, seed=5)
    share = summary.malformed_rows / sum(summary.rows_by_source.values())
    assert 0.001 <= share <= 0.01
    assert summary.malformed_files == 0


def test_complaints_redelivered_with_increasing_updated_at(
    small: tuple[Path, GenerationSummary],
) -> None:
    root, _ = small
    complaints = _clean(root, _load(root, "complaints"))
    versions = complaints.group_by("complaint_id").agg(
        pl.col("updated_at"), pl.col("status")
    ).filter(pl.col("updated_at").list.len() >= 2)
    assert versions.height > 10
    for updated, statuses in versions.select("updated_at", "status").iter_rows():
        times = [_ts(u) for u in updated]
        assert len(set(times)) == len(times)  # each version has its own updated_at
        # Ordered by updated_at, a complaint leaves "open" at most once and never returns.
        ordered = [s for _, s in sorted(zip(times, statuses, strict=True))]  # type: ignore[type-var]
        assert ordered[0] == "open"
        assert all(s == "open" for s in ordered[:-1])
    assert {"open", "resolved"} <= set(complaints["status"])
    for row in complaints.iter_rows(named=True):
        opened = _ts(row["opened_at"])
        for col in ("first_response_at", "resolved_at"):
            later = _ts(row[col])
            assert later is None or later >= opened  # type: ignore[operator]
        assert _ts(row["updated_at"]).date() <= date.fromisoformat(row["dt"])  # type: ignore[union-attr]


def test_returns_lifecycle(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    returns = _clean(root, _load(root, "returns"))
    assert {"requested", "approved", "refunded"} <= set(returns["status"])
    for row in returns.iter_rows(named=True):
        resolved = _ts(row["resolved_at"])
        assert resolved is None or resolved >= _ts(row["requested_at"])  # type: ignore[operator]
        if row["status"] == "refunded":
            assert float(row["refund_amount"]) >= 0


def test_reviews_never_delivered_before_created(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    reviews = _clean(root, _load(root, "reviews"))
    late = 0
    for created, dt in reviews.select("created_at", "dt").iter_rows():
        created_day = _ts(created).date()  # type: ignore[union-attr]
        assert created_day <= date.fromisoformat(dt)
        late += created_day < date.fromisoformat(dt)
    assert 0 < late < reviews.height * 0.4  # some, not most, arrive the next day
    assert set(reviews["rating"]) <= {"1", "2", "3", "4", "5"}


def test_sales_and_registry(small: tuple[Path, GenerationSummary]) -> None:
    root, summary = small
    sales = _clean(root, _load(root, "sales"))
    assert (sales["date"] == sales["dt"]).all()
    orders = sales["orders"].cast(pl.Int64)
    assert (orders >= 0).all()
    assert (sales["late_shipments"].cast(pl.Int64) <= orders).all()
    merchants = _clean(root, _load(root, "merchants"))
    first = merchants.filter(pl.col("dt") == str(summary.start))
    truth = pl.read_parquet(root / "truth" / "merchants.parquet")
    registered = truth.filter(pl.col("registered_on") <= summary.start)
    assert set(first["merchant_id"]) == set(registered["merchant_id"])
    later = merchants.filter(pl.col("dt") != str(summary.start))
    assert later.height < first.height
    assert (merchants["registered_on"] <= merchants["dt"]).all()
    assert set(merchants["status"]) <= {"active", "suspended", "closed"}
    known = set(truth["merchant_id"])
    assert set(sales["merchant_id"]) <= known


def test_chinese_and_english_text_and_gb18030(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    texts = [t for t in _load(root, "reviews")["text"].drop_nulls().to_list()]
    texts += _load(root, "complaints")["text"].drop_nulls().to_list()
    assert sum(bool(CJK.search(t)) for t in texts) > len(texts) * 0.3
    assert sum(not CJK.search(t) for t in texts) > len(texts) * 0.1
    assert any("与描述不符" in t or "货不对板" in t for t in texts)
    files = pl.read_parquet(root / "truth" / "files.parquet")
    gb = files.filter(pl.col("encoding") == "gb18030")
    assert gb.height >= 1
    assert set(gb["source"]) <= {"reviews", "complaints"}
    path = root / gb["file"][0]
    data = _decode(path)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert CJK.search(data.decode("gb18030"))


def test_ids_and_personal_ids(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    reviews = _clean(root, _load(root, "reviews"))
    assert reviews["review_id"].n_unique() == reviews.height
    assert reviews["reviewer_id"].str.contains(r"^u\d+$").all()
    assert reviews["reviewer_id"].n_unique() < reviews.height  # repeat buyers exist
    assert reviews["merchant_id"].str.contains(r"^[A-Za-z0-9_-]{1,64}$").all()


def test_malformed_files(tmp_path: Path) -> None:
    summary = _generate(tmp_path, merchants=30, days=6, seed=2, malformed_file_share=1.0)
    faults = pl.read_parquet(tmp_path / "truth" / "malformed.parquet").filter(
        pl.col("row_number").is_null()
    )
    assert faults.height == summary.malformed_files > 0
    assert set(faults["kind"]) == {
        "truncated_gzip", "truncated_parquet", "missing_required_column"
    }
    for rel, kind in faults.select("file", "kind").iter_rows():
        path = tmp_path / rel
        if kind == "truncated_gzip":
            with pytest.raises(EOFError):
                gzip.decompress(path.read_bytes())
        elif kind == "truncated_parquet":
            with pytest.raises(pa.ArrowException):
                pq.read_table(path)
        else:
            source = rel.split("/")[1]
            assert len(_read(path).columns) == len(CONTRACT_COLUMNS[source]) - 1


def test_refuses_non_empty_landing(small: tuple[Path, GenerationSummary]) -> None:
    root, _ = small
    with pytest.raises(ConfigError, match="already holds files"):
        _generate(root, merchants=5, days=2)


@pytest.mark.parametrize("bad", [{"merchants": 0}, {"days": 0}, {"gb18030_share": 1.5}])
def test_rejects_bad_arguments(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"must be"):
        _generate(tmp_path, **bad)
