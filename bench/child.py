"""One measured step of the benchmark, run in its own process by ``bench/run.py``.

Each step does exactly one thing and writes what it measured from the inside
(stage timings, row counts) as JSON to ``--out``; the parent measures the wall
time, CPU time and peak RSS of the whole process (``os.wait4``), so every
measurement has its own peak memory.

    python bench/child.py run --root R --date D --out F           # the nightly run (what `reputation run` calls)
    python bench/child.py ingest-validate --root R --date D --out F
    python bench/child.py generate --root R --merchants N --days N --seed N --out F
    python bench/child.py floor-landing --landing L --out F
    python bench/child.py floor-staged --lake R --date D --out F
    python bench/child.py mandated-floor --landing L --lake R --out F
    python bench/child.py duckdb --variant landing|staged --vars V --out F
    python bench/child.py read-csv --file F --out F
    python bench/child.py make-reviews --root R --rows N --date D --registry DIR --out F
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/run.py points this at a snapshot of transforms/ and expectations/ taken when it started, so a
# long benchmark measures one version of the code while others keep editing the working tree.
sys.path.insert(0, os.environ.get("BENCH_CODE_ROOT") or str(HERE.parent))

#: The columns the scoring path needs from each source (what the floor reads).
NEEDED: dict[str, list[str]] = {
    "merchants": ["merchant_id", "name", "category", "registered_on", "license_expires_on", "status"],
    "sales": ["merchant_id", "date", "orders", "late_shipments", "cancellations"],
    "reviews": ["review_id", "merchant_id", "rating", "text", "created_at", "verified_purchase"],
    "complaints": ["complaint_id", "merchant_id", "complainant_id", "category", "channel", "opened_at",
                   "first_response_at", "resolved_at", "status", "updated_at"],
    "returns": ["return_id", "merchant_id", "reason", "status", "requested_at", "resolved_at", "updated_at"],
}
SOURCES = tuple(NEEDED)


def _dump(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


# ------------------------------------------------------------------------- steps
def step_generate(a: argparse.Namespace) -> dict[str, Any]:
    from transforms.generate import generate_marketplace

    t0 = time.perf_counter()
    s = generate_marketplace(Path(a.root), merchants=a.merchants, days=a.days, seed=a.seed, show_progress=False)
    return {"seconds": round(time.perf_counter() - t0, 3), "end": s.end.isoformat(), "start": s.start.isoformat(),
            "rows_by_source": dict(s.rows_by_source), "files_by_source": dict(s.files_by_source)}


def step_run(a: argparse.Namespace) -> dict[str, Any]:
    """The same path as ``reputation run --date D --root R`` (cli.run -> pipeline.run_date)."""
    t0 = time.perf_counter()
    from transforms.pipeline import run_date
    from transforms.settings import load_settings

    t_import = time.perf_counter() - t0
    st = load_settings(root=a.root)
    t1 = time.perf_counter()
    result = run_date(date.fromisoformat(a.date), st)
    run_s = time.perf_counter() - t1
    manifest = result.summary or {}
    # run_date hands back the manifest dict; its timings dict is the run's own, so it
    # also holds "publish", which is measured after the manifest file was written.
    timings = dict(manifest.get("timings_seconds") or {})
    rows = {s: (manifest.get("sources", {}).get(s, {}).get("rows") or {}) for s in SOURCES}
    import transforms

    return {"status": result.status, "exit_code": result.exit_code, "message": result.message,
            "transforms_file": transforms.__file__,
            "import_seconds": round(t_import, 3), "run_seconds": round(run_s, 3), "timings": timings,
            "rows": rows, "scores_rows": (manifest.get("outputs") or {}).get("scores", {}).get("rows")}


def step_ingest_validate(a: argparse.Namespace) -> dict[str, Any]:
    """Issue 3.10: ``pipeline.ingest`` then ``pipeline.validate`` on one delivery day."""
    from transforms.errors import InputRejected
    from transforms.pipeline import ingest, validate
    from transforms.settings import load_settings

    st = load_settings(root=a.root)
    t0 = time.perf_counter()
    ctx = ingest(date.fromisoformat(a.date), st)
    t1 = time.perf_counter()
    gate_error = None
    try:
        validate(ctx, st)
    except InputRejected as exc:  # the gate may trip on a synthetic day; the work is done by then
        gate_error = str(exc)
    t2 = time.perf_counter()
    acct = {}
    for source in SOURCES:
        p = Path(a.root) / ctx.work / f"staged/{source}/dt={a.date}/_accounting.json"
        if p.exists():
            acct[source] = json.loads(p.read_text())
    return {"ingest_seconds": round(t1 - t0, 3), "validate_seconds": round(t2 - t1, 3),
            "timings": ctx.timings, "gate_error": gate_error, "accounting": acct, "work": ctx.work}


def _landing_files(landing: Path, source: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"csv": [], "jsonl": [], "parquet": []}
    for f in sorted((landing / source).glob("dt=*/*")):
        name = f.name
        if name.endswith((".csv", ".csv.gz")):
            out["csv"].append(str(f))
        elif name.endswith((".jsonl", ".jsonl.gz")):
            out["jsonl"].append(str(f))
        elif name.endswith(".parquet"):
            out["parquet"].append(str(f))
    return out


def _landing_scans(landing: Path) -> list[tuple[str, str, Any]]:
    """``(source, format, LazyFrame)`` reading the needed columns of every landing file of each format.

    What the floor reads (no typing, no checks), and what the typed read casts.
    """
    import polars as pl

    scans: list[tuple[str, str, Any]] = []
    for source in SOURCES:
        cols = NEEDED[source]
        files = _landing_files(landing, source)
        if files["csv"]:
            # Lossy UTF-8: the GB18030 files are read byte for byte (decoding them is the pipeline's job).
            scans.append((source, "csv", pl.scan_csv(files["csv"], infer_schema=False,
                                                     encoding="utf8-lossy").select(cols)))
        if files["jsonl"]:
            scans.append((source, "jsonl", pl.scan_ndjson(files["jsonl"], schema=dict.fromkeys(cols, pl.String))))
        if files["parquet"]:
            scans.append((source, "parquet", pl.scan_parquet(files["parquet"], missing_columns="insert").select(cols)))
    return scans


def step_floor_landing(a: argparse.Namespace) -> dict[str, Any]:
    """Read the needed columns of every landing file once (no typing, no checks)."""
    import polars as pl

    t0 = time.perf_counter()
    scans = _landing_scans(Path(a.landing))
    frames = pl.collect_all([lf for _, _, lf in scans])
    rows = {f"{source}/{fmt}": f.height for (source, fmt, _), f in zip(scans, frames, strict=True)}
    return {"seconds": round(time.perf_counter() - t0, 3), "rows": rows, "total_rows": sum(rows.values())}


def _typed_read_queries(landing: Path) -> list[Any]:
    """The floor's reads (:func:`_landing_scans`), each needed column cast to its contract type.

    One cast per value, the cheapest, and no checks: a date is one fixed-format parse, a timestamp one
    fixed-format parse of its first 19 characters. Less than what typing must do (every accepted
    form, a reason per bad value), so a lower bound of it.
    """
    import polars as pl

    from transforms.schemas import SOURCES as CONTRACT

    def cast(source: str, col: str, dtype: pl.DataType) -> pl.Expr:
        kind = CONTRACT[source].column(col).kind
        c = pl.col(col)
        if dtype != pl.String or kind == "string":
            return c
        if kind == "int":
            return c.cast(pl.Int64, strict=False)
        if kind == "float":
            return c.cast(pl.Float64, strict=False)
        if kind == "bool":
            return c == "true"
        if kind == "date":
            return c.str.to_date("%Y-%m-%d", strict=False)
        return c.str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us")

    queries: list[pl.LazyFrame] = []
    for source, _, lf in _landing_scans(landing):
        schema = lf.collect_schema()
        queries.append(lf.select(cast(source, c, schema[c]) for c in NEEDED[source]))
    return queries


def step_mandated_floor(a: argparse.Namespace) -> dict[str, Any]:
    """The least of the per-row work the contract requires, each part measured alone.

    Three parts have no counterpart in the DuckDB reference (the suites, the staged write, the
    HMAC); two are the cheapest form of what both do (reading and typing; keys and counts).

    Run with one Polars thread (``POLARS_MAX_THREADS=1``, set by ``bench/run.py``), so each part's
    wall time is its work with no idle or spinning threads; :func:`mandated_bound` then spreads the
    sum over every core as if perfectly parallel. Each part is a lower bound of what the pipeline
    does:

    - typed read: the landing floor plus one cheapest cast per value (:func:`_typed_read_queries`);
    - Great Expectations: the sources' suites over the *accepted* rows of the full recompute (the
      pipeline validates every delivered row), in batches of whole days of up to
      ``VALIDATE_BATCH_ROWS`` rows (the largest the pipeline uses), with no result stored;
    - staged write: those rows written once as ``Lake.write_frame`` writes a staged partition;
    - HMAC: each distinct personal identifier hashed once (the pipeline hashes once per file);
    - keys and counts: the least of the work shared with the DuckDB query, each source's distinct
      keys and one row count per merchant over those rows (the query deduplicates and aggregates
      far more).
    """
    import polars as pl

    from transforms.expectations import DELIVERY_END, ROW_ID, SuiteRunner, load_suite
    from transforms.lake import Lake
    from transforms.pipeline import VALIDATE_BATCH_ROWS
    from transforms.schemas import SOURCES as CONTRACT
    from transforms.settings import load_settings
    from transforms.staging import _hmac_hex24_many, _hmac_pads, business_day_bounds

    def timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        return out, time.perf_counter() - w0, time.process_time() - c0

    def add(part: dict[str, Any], rows: int, wall: float, cpu: float) -> None:
        part["rows"] += rows
        part["wall_s"] += wall
        part["cpu_s"] += cpu

    parts: dict[str, dict[str, Any]] = {k: {"rows": 0, "wall_s": 0.0, "cpu_s": 0.0} for k in (
        "typed_read", "great_expectations", "staged_write", "keys_and_counts", "hmac")}
    frames, w, c = timed(pl.collect_all, _typed_read_queries(Path(a.landing)))
    add(parts["typed_read"], sum(f.height for f in frames), w, c)
    del frames

    lake_root = Path(a.lake)
    tz = load_settings(root=str(lake_root)).tz
    parts["great_expectations"]["suite_runs"] = 0
    scratch = Lake(str(Path(a.out).parent / "mandated-scratch"))
    for source in SOURCES:
        parts_dirs = sorted((lake_root / "staged" / source).glob("dt=*"))
        runner = SuiteRunner(load_suite(source), docs_dir=None, batch_name=source, build_docs=False)
        batches: list[list[Path]] = [[]]
        rows = 0
        for d in parts_dirs:
            n = pl.scan_parquet(d / "part-0.parquet").select(pl.len()).collect().item()
            if batches[-1] and rows + n > VALIDATE_BATCH_ROWS:
                batches.append([])
                rows = 0
            batches[-1].append(d)
            rows += n
        for batch in (b for b in batches if b):
            days = [date.fromisoformat(d.name.removeprefix("dt=")) for d in batch]
            frame = pl.read_parquet([d / "part-0.parquet" for d in batch]).drop("_file", "_row_number", "_row_hash")
            ends = {d: business_day_bounds(d, tz)[1] for d in days}
            checked = frame.with_columns(
                pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_ID),
                pl.col("_dt").replace_strict(ends, default=None, return_dtype=pl.Datetime("us", "UTC"))
                .alias(DELIVERY_END)).rechunk()
            _, w, c = timed(runner.run, checked)
            add(parts["great_expectations"], checked.height, w, c)
            parts["great_expectations"]["suite_runs"] += 1
            del checked
            for d in days:
                part = frame.filter(pl.col("_dt") == d)
                _, w, c = timed(scratch.write_frame, part, f"{source}/part-0.parquet")
                add(parts["staged_write"], part.height, w, c)
    shutil.rmtree(scratch.root, ignore_errors=True)

    # The least of the work the pipeline shares with the DuckDB query: each source's distinct keys
    # (versioning and duplicates need at least that) and one count per merchant (the scores are
    # per-merchant aggregates), over the rows read once.
    for source in SOURCES:
        staged = pl.read_parquet(str(lake_root / "staged" / source / "dt=*" / "*.parquet"),
                                 columns=list(dict.fromkeys([*CONTRACT[source].key, "merchant_id"])))
        key = list(CONTRACT[source].key)
        _, w, c = timed(lambda f, k: (f.select(k).n_unique(), f.group_by("merchant_id").len()), staged, key)
        add(parts["keys_and_counts"], staged.height, w, c)
        del staged

    personal = [(s, c.name) for s, src in CONTRACT.items() for c in src.columns if c.personal]
    scans = [pl.scan_parquet(str(lake_root / "staged" / s / "dt=*" / "*.parquet")).select(pl.col(col).alias("v"))
             for s, col in personal]
    ids = pl.concat(scans).drop_nulls().unique().collect().get_column("v")
    inner, outer = _hmac_pads(b"benchmark-key")
    _, w, c = timed(_hmac_hex24_many, inner, outer, ids)
    add(parts["hmac"], len(ids), w, c)
    for part in parts.values():
        part["wall_s"], part["cpu_s"] = round(part["wall_s"], 3), round(part["cpu_s"], 3)
    return {"parts": parts, "polars_threads": pl.thread_pool_size(), "cores": os.cpu_count(),
            "batch_rows": VALIDATE_BATCH_ROWS}


def staged_window_files(lake: Path, day: date, window_days: int) -> dict[str, list[str]]:
    """Staged Parquet the nightly scoring reads: registry up to D, other sources in the window."""
    lo = day - timedelta(days=window_days - 1)
    out: dict[str, list[str]] = {}
    for source in SOURCES:
        files = []
        for part in sorted((lake / "staged" / source).glob("dt=*")):
            d = date.fromisoformat(part.name.removeprefix("dt="))
            if d > day or (source != "merchants" and d < lo):
                continue
            files += sorted(str(p) for p in part.glob("*.parquet"))
        out[source] = files
    return out


def step_floor_staged(a: argparse.Namespace) -> dict[str, Any]:
    """Read the needed columns of the staged Parquet (and the review aggregates) once."""
    import polars as pl

    lake = Path(a.lake)
    day = date.fromisoformat(a.date)
    t0 = time.perf_counter()
    files = staged_window_files(lake, day, a.window_days)
    queries = [pl.scan_parquet(files[s]).select(NEEDED[s]) for s in SOURCES if files[s]]
    names = [s for s in SOURCES if files[s]]
    agg = sorted(str(p) for p in (lake / "agg" / "reviews").glob("dt=*/*.parquet"))
    if agg:
        queries.append(pl.scan_parquet(agg))
        names.append("agg/reviews")
    frames = pl.collect_all(queries)
    rows = {n: f.height for n, f in zip(names, frames, strict=True)}
    return {"seconds": round(time.perf_counter() - t0, 3), "rows": rows,
            "rows_without_agg": sum(v for k, v in rows.items() if k != "agg/reviews")}


def step_duckdb(a: argparse.Namespace) -> dict[str, Any]:
    """Run bench/duckdb_reference.sql: the input views of one variant, then the aggregation."""
    import duckdb

    variables = json.loads(Path(a.vars).read_text())
    sql = (HERE / "duckdb_reference.sql").read_text(encoding="utf-8")
    sections = _sql_sections(sql)
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if a.threads:
        con.execute(f"SET threads = {int(a.threads)}")
    for k, v in variables.items():
        con.execute(f"SET VARIABLE {k} = ?", [v])
    con.execute(sections[f"views_{a.variant}"])
    con.execute(sections["reference"])
    result = con.sql("SELECT * FROM reference ORDER BY merchant_id").to_arrow_table()
    seconds = time.perf_counter() - t0
    out_path = Path(a.out).with_suffix(".parquet")
    import pyarrow.parquet as pq

    pq.write_table(result, out_path)
    return {"seconds": round(seconds, 3), "merchants": result.num_rows, "result": str(out_path),
            "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}  # type: ignore[index]


def _sql_sections(sql: str) -> dict[str, str]:
    """Split the SQL file at ``-- @section <name>`` markers."""
    out: dict[str, str] = {}
    name = None
    buf: list[str] = []
    for line in sql.splitlines():
        if line.startswith("-- @section "):
            if name:
                out[name] = "\n".join(buf)
            name, buf = line.removeprefix("-- @section ").strip(), []
        elif name:
            buf.append(line)
    if name:
        out[name] = "\n".join(buf)
    return out


def step_read_csv(a: argparse.Namespace) -> dict[str, Any]:
    """The bare read of one CSV file with Polars (every column as text, like staging)."""
    import polars as pl

    t0 = time.perf_counter()
    df = pl.read_csv(a.file, infer_schema=False)
    return {"seconds": round(time.perf_counter() - t0, 3), "rows": df.height, "columns": df.width}


def step_make_reviews(a: argparse.Namespace) -> dict[str, Any]:
    """Synthesise one landing CSV of N review rows in the contract's columns for one dt."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(310)
    n = a.rows
    reg = pl.concat([pl.read_csv(f, infer_schema=False, columns=["merchant_id"]) for f in
                     sorted(Path(a.registry).glob("*.csv*"))]
                    + [pl.read_ndjson(f, schema={"merchant_id": pl.String}) for f in
                       sorted(Path(a.registry).glob("*.jsonl*"))]
                    + [pl.read_parquet(f, columns=["merchant_id"]) for f in sorted(Path(a.registry).glob("*.parquet"))])
    ids = reg.filter(pl.col("merchant_id").str.contains(r"^M\d+$")).get_column("merchant_id").unique().sort()
    day = date.fromisoformat(a.date)
    phrases = np.array([
        "Great product, fast delivery", "质量很好，物流很快", "与描述不符，颜色完全不一样", "Not as described at all",
        "Okay for the price", "包装破损，但商品完好", "Would buy again!!", "客服态度很好", "fake, do not buy",
        "The size runs small; order one up", "一般般吧", "Arrived late but works fine", "非常满意，五星好评",
        "Stopped working after a week", "Exactly as pictured, thanks", "假货，差评", "",
    ])
    secs = rng.integers(0, 86_400, n)
    base = pl.datetime(day.year, day.month, day.day, time_unit="us")
    frame = pl.DataFrame({
        "i": np.arange(n, dtype=np.int64),
        "m": rng.integers(0, ids.len(), n),
        "o": rng.integers(0, 50_000_000, n),
        "u": rng.integers(0, 2_000_000, n),
        "rating": rng.choice(np.array([1, 2, 3, 4, 5]), n, p=[0.06, 0.05, 0.11, 0.28, 0.50]),
        "t": rng.integers(0, len(phrases), n),
        "s": secs,
        "verified_purchase": rng.random(n) < 0.85,
    }).select(
        (pl.lit("R5M") + pl.col("i").cast(pl.String).str.zfill(9)).alias("review_id"),
        pl.lit(ids).gather(pl.col("m")).alias("merchant_id"),
        (pl.lit("O") + pl.col("o").cast(pl.String).str.zfill(9)).alias("order_id"),
        (pl.lit("U") + pl.col("u").cast(pl.String).str.zfill(8)).alias("reviewer_id"),
        pl.col("rating").cast(pl.String),
        pl.lit(pl.Series(phrases)).gather(pl.col("t")).replace("", None).alias("text"),
        (base + pl.duration(seconds=pl.col("s"))).dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("created_at"),
        pl.col("verified_purchase").cast(pl.String),
    )
    # About 0.2 % faulty rows, so the quarantine path does real work as it would at night.
    bad = rng.random(n) < 0.002
    kind = rng.integers(0, 3, n)
    frame = frame.with_columns(
        pl.when(pl.Series(bad & (kind == 0))).then(pl.lit("9")).otherwise(pl.col("rating")).alias("rating"),
        pl.when(pl.Series(bad & (kind == 1))).then(pl.lit("yesterday-ish")).otherwise(pl.col("created_at"))
        .alias("created_at"),
        pl.when(pl.Series(bad & (kind == 2))).then(pl.lit("M9999999")).otherwise(pl.col("merchant_id"))
        .alias("merchant_id"),
    )
    out = Path(a.root) / "landing" / "reviews" / f"dt={a.date}" / "reviews_5m.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    return {"rows": n, "bytes": out.stat().st_size, "file": str(out), "merchants": ids.len(),
            "faulty_rows": int(bad.sum())}


STEPS = {
    "generate": step_generate, "run": step_run, "ingest-validate": step_ingest_validate,
    "floor-landing": step_floor_landing, "floor-staged": step_floor_staged, "duckdb": step_duckdb,
    "read-csv": step_read_csv, "make-reviews": step_make_reviews, "mandated-floor": step_mandated_floor,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=sorted(STEPS))
    p.add_argument("--out", required=True)
    p.add_argument("--root")
    p.add_argument("--date")
    p.add_argument("--merchants", type=int)
    p.add_argument("--days", type=int)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--landing")
    p.add_argument("--lake")
    p.add_argument("--window-days", type=int, default=180)
    p.add_argument("--variant", choices=["landing", "staged"])
    p.add_argument("--vars")
    p.add_argument("--threads", type=int)
    p.add_argument("--file")
    p.add_argument("--rows", type=int)
    p.add_argument("--registry")
    a = p.parse_args(argv)
    data = STEPS[a.step](a)
    _dump(a.out, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
