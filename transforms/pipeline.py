"""The nightly run for one score date: ingest → validate → score → publish.

The CLI (``reputation run``) and the Airflow DAG call these same four functions.
Each step reads and writes only the run's attempt folder, keyed by the score
date, and hands the next one a small JSON-able context; nothing is visible to
readers until :func:`publish` commits, so a failed or killed run leaves every
published date untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl

from transforms import __version__
from transforms.errors import FileRejected, GateFailed, InputRejected, ReputationError
from transforms.lake import Lake, table_from_polars
from transforms.parallel import (
    LARGEST_UNIT_ALONE,
    call,
    map_largest_first,
    pool_size,
    release_memory,
    worker_pool,
)
from transforms.policy import Policy, load_policy
from transforms.schemas import (
    QUARANTINE_SCHEMA,
    SCHEMA_VERSION,
    SCORES_SCHEMA,
    SOURCE_NAMES,
    SOURCES,
)
from transforms.settings import Settings, load_settings
from transforms.staging import business_day_bounds

log = logging.getLogger("reputation")

#: Order matters: the registry is validated first because other sources are checked against it.
STAGE_ORDER = ("merchants", "sales", "reviews", "complaints", "returns")


@dataclass
class RunContext:
    """What one step hands the next (serialised as JSON between Airflow tasks)."""

    score_date: str
    attempt_id: str
    root: str
    policy_path: str | None
    run_id: str = ""
    days_to_stage: dict[str, list[str]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def day(self) -> date:
        return date.fromisoformat(self.score_date)

    @property
    def work(self) -> str:
        return f"_attempts/{self.attempt_id}"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunContext:
        return cls(**data)


@dataclass
class RunResult:
    """The outcome of a run, as the CLI reports it."""

    score_date: date
    status: str          # published | held | failed
    exit_code: int
    run_id: str
    manifest_path: str
    message: str
    summary: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers
def _settings(settings: Settings | None, root: str | None) -> Settings:
    if settings is None:
        return load_settings(root=root)
    if root is not None:
        return settings.model_copy(update={"root": root})
    return settings


def _policy(ctx: RunContext) -> Policy:
    return load_policy(ctx.policy_path)


def _timed(ctx: RunContext, step: str, start: float) -> None:
    from transforms.logs import stage_log

    ctx.timings[step] = round(time.perf_counter() - start, 3)
    stage_log(step, ctx, seconds=ctx.timings[step])


def _save_ctx(lake: Lake, ctx: RunContext) -> None:
    lake.write_json(ctx.to_json(), f"{ctx.work}/context.json")


def staged_dir(source: str, dt: date) -> str:
    return f"staged/{source}/dt={dt.isoformat()}"


def quarantine_dir(source: str, dt: date) -> str:
    return f"quarantine/{source}/dt={dt.isoformat()}"


def _staged_days(lake: Lake, source: str) -> list[date]:
    return lake.partitions(f"staged/{source}", "dt")


def _resolved_staged_dirs(lake: Lake, ctx: RunContext, source: str, lo: date | None, hi: date) -> list[str]:
    """Staged partitions for ``lo <= dt <= hi``: this attempt's where it restaged, else published."""
    new = set(ctx.days_to_stage.get(source, []))
    days = {d for d in _staged_days(lake, source)} | {date.fromisoformat(d) for d in new}
    out = []
    for d in sorted(days):
        if d > hi or (lo is not None and d < lo):
            continue
        out.append(f"{ctx.work}/{staged_dir(source, d)}" if d.isoformat() in new else staged_dir(source, d))
    return out


# ------------------------------------------------------------------------------ ingest
def ingest(score_date: date, settings: Settings | None = None, *, root: str | None = None,
           attempt_id: str | None = None) -> RunContext:
    """Read and type every landing file this run must stage.

    A delivery day is staged once (its staged partition depends only on landing
    days up to it, so the as-of rule holds); the score date's own day is always
    restaged, so a rerun of a date sees exactly its inputs.

    Returns
    -------
    RunContext
        Context for :func:`validate`; typed rows are in the attempt folder.
    """
    t0 = time.perf_counter()
    st = _settings(settings, root)
    lake = Lake(st.root)
    lake.recover(f"score_date={score_date.isoformat()}")
    policy = load_policy(st.policy_path)
    key, dev_key = st.pseudonym_key_bytes()
    ctx = RunContext(score_date=score_date.isoformat(), attempt_id=attempt_id or uuid.uuid4().hex[:12],
                     root=str(lake.root), policy_path=str(st.policy_path) if st.policy_path else None)
    ctx.notes["development_pseudonym_key"] = dev_key
    ctx.notes["business_timezone"] = st.business_timezone
    fingerprint = hashlib.sha256()
    fingerprint.update(f"{score_date}|{policy.digest}|{__version__}|{SCHEMA_VERSION}|{st.business_timezone}".encode())
    files_report: dict[str, Any] = {}
    plans: dict[str, list[tuple[date, list[Any]]]] = {}
    for source in STAGE_ORDER:
        landed = [d for d in lake.landing_days(source) if d <= score_date]
        staged = set(_staged_days(lake, source))
        todo = sorted({d for d in landed if d not in staged} | ({score_date} if score_date in landed else set()))
        ctx.days_to_stage[source] = [d.isoformat() for d in todo]
        report: dict[str, Any] = {"files": [], "file_failures": [], "bad_paths": [], "extra_columns": {}}
        report["bad_paths"] += [b.__dict__ for b in lake.stray_landing_paths(source)]
        plans[source] = []
        for d in landed:
            good, bad = lake.list_landing(source, d)
            for f in good:
                fingerprint.update(f"{f.rel}|{f.size_bytes}".encode())
            if d not in todo:
                continue
            report["bad_paths"] += [b.__dict__ for b in bad]
            plans[source].append((d, good))
        for b in report["bad_paths"]:
            log.warning("%s: [%s] %s; skipped", b["rel"], b["rule"], b["message"])
        files_report[source] = report
    # Sources are staged independently (each writes only its own typed files), in worker
    # processes when there is enough to do; the reports come back in the fixed order.
    work = {s: sum(f.size_bytes for _, fs in plans[s] for f in fs) for s in STAGE_ORDER}
    size = pool_size(st.workers, work.values(), min_work=st.parallel_min_bytes, largest_alone=LARGEST_UNIT_ALONE)
    with worker_pool(size, st.log_format) as pool:
        staged_reports = map_largest_first(pool, _stage_source, {
            s: (work[s], (ctx.to_json(), s, plans[s], st, key)) for s in STAGE_ORDER})
    for source in STAGE_ORDER:
        files_report[source].update(staged_reports[source])
    ctx.run_id = "r" + fingerprint.hexdigest()[:16]
    lake.write_json(files_report, f"{ctx.work}/files.json")
    _timed(ctx, "ingest", t0)
    _save_ctx(lake, ctx)
    return ctx


def _stage_source(ctx_json: dict[str, Any], source: str, days: list[tuple[date, list[Any]]],
                  st: Settings, key: bytes) -> dict[str, Any]:
    """Type one source's landing files, one delivery day at a time, into the attempt's typed files.

    Runs in the parent or in a worker process (:mod:`transforms.parallel`); it writes only
    ``typed/<source>/`` and returns the source's file report (files read, files rejected,
    extra columns).
    """
    ctx = RunContext.from_json(ctx_json)
    lake = Lake(ctx.root)
    spec = SOURCES[source]
    report: dict[str, Any] = {"files": [], "file_failures": [], "extra_columns": {}}
    for d, good in days:
        # One delivery day at a time: memory is bounded by a day's files, not the history.
        frames: list[pl.LazyFrame] = []
        for f in good:
            try:
                typed, info = _read_one(lake, f, spec, st, key)
            except FileRejected as exc:
                # exc.message reads "<file>: [<rule>] <what>"; keep <what> (the gate adds the rest once).
                what = exc.message.removeprefix(f"{exc.path}: [{exc.rule}] ")
                report["file_failures"].append({"file": exc.path, "rule": exc.rule, "message": what,
                                                "hint": exc.hint})
                log.warning("%s: [%s] %s", exc.path, exc.rule, what)
                continue
            report["files"].append(info)
            if info["extra_columns"]:
                report["extra_columns"][f.rel] = info["extra_columns"]
            frames.append(typed)
        day_typed = pl.concat(frames, how="vertical") if frames else _empty_typed(source).lazy()
        del frames
        # Written once and read once (by validate), inside the attempt, so the fastest writer:
        # Polars' own in LZ4, a third of the time of an Arrow copy written by pyarrow in snappy
        # (12.5 + 2.9 s of M's full recompute). Streamed, so each row's delivered text
        # (``_original``, see _read_one) is encoded a batch of rows at a time as it is written.
        lake.sink_frame(day_typed, _typed_file(ctx, source, d), compression="lz4")
        del day_typed
    return report


def _typed_file(ctx: RunContext, source: str, d: date) -> str:
    """The attempt's typed rows of one source and delivery day (written by ingest, read by validate)."""
    return f"{ctx.work}/typed/{source}/dt={d.isoformat()}.parquet"


def _empty_typed(source: str) -> pl.DataFrame:
    from transforms.staging import empty_typed

    return empty_typed(SOURCES[source]).with_columns(pl.lit(None, pl.String).alias("_original"))


def _read_one(lake: Lake, f: Any, spec: Any, st: Settings, key: bytes) -> tuple[pl.LazyFrame, dict[str, Any]]:
    """One landing file's typed rows, with each row's delivered text (``_original``), and its report.

    The rows are typed here; ``_original`` (each row as delivered, pseudonymised, as JSON) is an
    expression on the delivered columns, carried beside the typed ones under hidden names and
    computed only when the lazy frame is written. As a column it was the largest of the file
    (1.1 GB of a CSV of 5 M reviews, issue 3.10), held whole until the day's file was written.
    """
    from transforms.staging import (
        castable_to_string,
        check_columns,
        parse_csv,
        parse_jsonl,
        parse_parquet,
        pseudonymise,
        type_frame,
    )

    encoding = "binary"
    if f.fmt == ".parquet":
        raw = parse_parquet(lake.read_landing_parquet(f), f.rel)
    else:
        data = lake.read_landing_bytes(f)
        if f.fmt.startswith(".csv"):
            raw, encoding = parse_csv(data, f.rel, st.csv_encodings)
        else:
            raw, encoding = parse_jsonl(data, f.rel, st.csv_encodings)
        del data  # parsed: the file's bytes are not needed while its rows are typed
    extra = check_columns(raw, spec, f.rel)
    personal = [c.name for c in spec.columns if c.personal]
    for c in personal:
        if c in raw.columns and not castable_to_string(raw.schema[c]):
            raise FileRejected(f.rel, "wrong_column_type", f"column {c} is of type {raw.schema[c]}, not string",
                               hint=f"deliver {c} as string per the data contract")
    if raw.width == 0 or raw.height == 0:
        return _empty_typed(spec.name).lazy(), {"file": f.rel, "rows": 0, "encoding": encoding,
                                                "extra_columns": extra}
    raw = pseudonymise(raw, personal, key)
    typed = type_frame(raw, spec, f.rel, f.dt)
    hidden = {c: f"\0delivered:{c}" for c in raw.columns}
    # Scalars as their delivered text; nested values (lists, structs) as JSON.
    original = pl.struct([(pl.col(hidden[c]).cast(pl.String) if castable_to_string(t) else pl.col(hidden[c])).alias(c)
                          for c, t in raw.schema.items()]).struct.json_encode().alias("_original")
    rows = raw.height
    lazy = typed.hstack(raw.rename(hidden).get_columns()).lazy().select(*typed.columns, original)
    return lazy, {"file": f.rel, "rows": rows, "encoding": encoding, "extra_columns": extra}


# ---------------------------------------------------------------------------- validate
def validate(ctx: RunContext, settings: Settings | None = None) -> RunContext:
    """Run the Great Expectations suites, quarantine bad rows, dedupe, account and gate.

    Raises
    ------
    InputRejected
        When a file-level failure or a batch rule of the fail-closed gate trips
        (unless the policy's ``gate.override`` is set); nothing is published.
    """
    from transforms.expectations import build_data_docs

    t0 = time.perf_counter()
    st = _settings(settings, ctx.root)
    lake = Lake(ctx.root)
    policy = _policy(ctx)
    files = lake.read_json(f"{ctx.work}/files.json")
    docs = lake.path(f"{ctx.work}/runs/data_docs")
    # The registry first: the other sources' rows are checked against it. Those four are
    # independent of each other and go to worker processes when there is enough to do.
    rest = [s for s in STAGE_ORDER if s != "merchants"]
    rows = {s: _typed_rows(lake, ctx, s) for s in rest}
    size = pool_size(st.workers, rows.values(), min_work=st.parallel_min_rows, largest_alone=LARGEST_UNIT_ALONE)
    # N processes each holding a batch would hold N batches. Each worker's batch is 1/(N+1) of the
    # single process's, as the workers' own imports (~0.3 GB each) and this process count too: at L
    # 1/N (2 x 500 k rows) peaked at 3.84 GiB, against 3.5 GiB for one process with 1 M rows.
    batch_rows = max(VALIDATE_BATCH_ROWS // (size + 1 if size > 1 else 1), 1)
    with worker_pool(size, st.log_format) as pool:
        # With a pool the registry is validated in a worker too: this process then never holds
        # Great Expectations and a batch of its own beside the workers' batches.
        validation: dict[str, Any] = map_largest_first(pool, _validate_source, {
            "merchants": (1, (ctx.to_json(), "merchants", st, None, batch_rows))})
        known = _registry_first_seen(lake, ctx)
        validation.update(map_largest_first(pool, _validate_source, {
            s: (rows[s], (ctx.to_json(), s, st, known, batch_rows)) for s in rest}))
    lake.write_json(validation, f"{ctx.work}/validation.json")
    build_data_docs(docs)
    gate = evaluate_gate(lake, ctx, policy, files, validation)
    lake.write_json(gate, f"{ctx.work}/gate.json")
    _timed(ctx, "validate", t0)
    _save_ctx(lake, ctx)
    if gate["tripped"] and not policy.gate.override:
        first = gate["tripped"][0]
        if first["rule"].startswith("file:"):
            raise FileRejected(first["file"], first["rule"].removeprefix("file:"), first["message"],
                               hint=first.get("hint") or "fix or re-deliver the file, then rerun the date")
        raise GateFailed(first["rule"], first["message"],
                         hint="inspect the quarantine and manifest; to publish anyway after review, set "
                              "gate.override: true in a reviewed policy file (REPUTATION_POLICY_PATH)")
    return ctx


def _validate_source(ctx_json: dict[str, Any], source: str, st: Settings, known: pl.DataFrame | None,
                     batch_rows: int) -> dict[str, Any]:
    """Validate, version and stage one source's typed rows, one batch of delivery days at a time.

    Runs in the parent or in a worker process (:mod:`transforms.parallel`); it writes only
    the source's staged and quarantine partitions, their accounting and its Great
    Expectations results, and returns the source's validation report.

    Parameters
    ----------
    known
        First delivery day of every registry merchant (``None`` while validating the registry).
    batch_rows
        Most typed rows per batch (:data:`VALIDATE_BATCH_ROWS` in one process). The staged rows,
        quarantine and accounting do not depend on it; only the number of Great Expectations
        results does.
    """
    from transforms.expectations import DELIVERY_END, ROW_ID, SuiteRunner, load_suite
    from transforms.validation import apply_versions, key_expr, row_reasons, version_columns

    ctx = RunContext.from_json(ctx_json)
    lake = Lake(ctx.root)
    docs = lake.path(f"{ctx.work}/runs/data_docs")
    spec = SOURCES[source]
    days = [date.fromisoformat(d) for d in ctx.days_to_stage[source]]
    batches = _day_batches(lake, ctx, source, days, batch_rows)
    # Results are stored beside the docs; the site is built once, after every source.
    runner = SuiteRunner(load_suite(source), docs_dir=docs, batch_name=source, build_docs=False)
    prior_dirs = _prior_staged_dirs(lake, ctx, source)
    cols = version_columns(spec)
    # Valid rows of earlier batches of this run are earlier deliveries for the later ones: the
    # accepted ones through their staged partitions, the rest (duplicates, conflicts) from here.
    earlier_dirs: list[str] = []
    earlier_unaccepted: list[pl.DataFrame] = []
    # Hash of the key and delivery day of every valid row of the earlier batches: a batch reads
    # only the earlier partitions that hold one of its keys. Scanning all of them for every batch
    # grew with the square of the history (25 batches of reviews at L read 325 M keys), though
    # most keys are new.
    key = list(spec.key)
    key_hash = key_expr(key).hash(seed=0).alias("_key_hash")
    seen: list[pl.DataFrame] = []
    success, batch_failures, evaluated = True, [], 0
    day_reports: dict[str, Any] = {}
    for batch_days in batches:
        paths = [lake.path(_typed_file(ctx, source, d)) for d in batch_days]
        # The delivered text of every row (``_original``, about 60 % of a typed file's bytes) is
        # read only for the rows quarantined, at the end: a day of 5 M reviews held 1.1 GB of it.
        # One chunk per column: on the reader's one chunk per row group, the joins and the row
        # hash below each made (and kept) contiguous copies, 0.7-1 GB for those 5 M rows.
        typed = (pl.scan_parquet(paths).select(pl.exclude("_original")).collect(engine="in-memory").rechunk()
                 if paths else _empty_typed(source).drop("_original"))
        typed = typed.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_ID))
        # End of each delivery day in the business time zone, as a UTC instant.
        ends = {d: business_day_bounds(d, st.tz)[1] for d in batch_days}
        end_expr = pl.col("_dt").replace_strict(ends, default=None, return_dtype=pl.Datetime("us", "UTC"))
        batch = (typed.drop("_parse_errors", "_file", "_row_number")
                 .with_columns(end_expr.alias(DELIVERY_END)))
        # A single delivery day can exceed the batch size (issue 3.10: 5 M rows in one file); the
        # suite judges rows one by one, so it runs on slices (its pandas copy is per slice).
        row_failures: dict[str, list[int]] = {}
        for offset in range(0, max(batch.height, 1), batch_rows):
            result = runner.run(batch.slice(offset, batch_rows))
            success = success and result.success
            batch_failures += [f for f in result.batch_failures if f not in batch_failures]
            evaluated += result.evaluated
            for code, ids in result.row_failures.items():
                row_failures.setdefault(code, []).extend(ids)  # slices are in row-id order
        del batch
        reasons = row_reasons(typed, row_failures, known)
        del typed
        valid_keys = (reasons.filter(pl.col("reason_codes").list.len() == 0)
                      .select(key_hash, "_dt").unique())
        if source == "merchants":
            prior = lake.scan_partitions(prior_dirs + earlier_dirs)  # first_seen needs every version
        else:
            hashes = valid_keys.get_column("_key_hash").implode()
            hit = {d for part in seen
                   for d in part.filter(pl.col("_key_hash").is_in(hashes)).get_column("_dt").unique()}
            prior = lake.scan_partitions(prior_dirs + [f"{ctx.work}/{staged_dir(source, d)}" for d in sorted(hit)])
        seen.append(valid_keys)
        if earlier_unaccepted:
            carried = pl.concat(earlier_unaccepted, how="vertical").lazy()
            prior = carried if prior is None else pl.concat([prior.select(cols), carried], how="vertical")
        outcome = apply_versions(reasons, reasons, prior, spec)
        del reasons
        if outcome.unaccepted is not None and outcome.unaccepted.height:
            earlier_unaccepted.append(outcome.unaccepted)
        acc_by_day = _days_of_sorted(outcome.accepted)
        quarantined = _with_originals(outcome.quarantined, paths)
        quar_by_day = quarantined.partition_by("_dt", as_dict=True, include_key=True)
        for d in batch_days:
            acc = acc_by_day.get((d,), outcome.accepted.clear())
            quar = quar_by_day.get((d,), quarantined.clear())
            # Polars' writer, no Arrow copy: half the time of pyarrow's for the same file contents.
            lake.write_frame(acc, f"{ctx.work}/{staged_dir(source, d)}/part-0.parquet",
                             metadata={"run_id": ctx.run_id, "schema_version": SCHEMA_VERSION})
            qt = quar.select(
                pl.lit(source).alias("source"), pl.col("_dt").alias("dt"), pl.col("_file").alias("file"),
                pl.col("_row_number").alias("row_number"), pl.col("reason_codes"),
                pl.col("reasons"), pl.col("_original").fill_null("{}").alias("original"),
                pl.lit(ctx.day).alias("quarantined_on"), pl.lit(ctx.run_id).alias("run_id"),
            ).sort("file", "row_number")
            lake.write_parquet(table_from_polars(qt, QUARANTINE_SCHEMA),
                               f"{ctx.work}/{quarantine_dir(source, d)}/part-0.parquet",
                               metadata={"run_id": ctx.run_id, "schema_version": SCHEMA_VERSION})
            rep = outcome.day_report(d)
            lake.write_json(rep, f"{ctx.work}/{staged_dir(source, d)}/_accounting.json")
            day_reports[d.isoformat()] = rep
            earlier_dirs.append(f"{ctx.work}/{staged_dir(source, d)}")
        del outcome, acc_by_day, quarantined, quar_by_day
        release_memory()
    return {"suite": runner.suite["name"], "success": success, "batch_failures": batch_failures,
            "evaluated_rows": evaluated, "staged_days": day_reports}


def _with_originals(quarantined: pl.DataFrame, paths: list[Path]) -> pl.DataFrame:
    """Quarantined rows with their delivered text (``_original``), read from the batch's typed files.

    ``_row_id`` is a row's position in ``paths`` read in order, as :func:`_validate_source`
    numbers them. The files are read a row group at a time, and only the groups holding a
    quarantined row: the whole column (1.1 GB for a day of 5 M reviews) is never held, and a
    streaming scan of it with a row-index filter still held 0.8 GB.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.expectations import ROW_ID

    if not quarantined.height:
        return quarantined.with_columns(pl.lit(None, pl.String).alias("_original"))
    wanted = np.unique(quarantined.get_column(ROW_ID).to_numpy())
    ids: list[pl.Series] = []
    texts: list[pl.Series] = []
    start = 0  # row id of the group's first row
    for path in paths:
        file = pq.ParquetFile(path)
        for group in range(file.num_row_groups):
            rows = file.metadata.row_group(group).num_rows
            lo, hi = np.searchsorted(wanted, [start, start + rows])
            if hi > lo:
                text = file.read_row_group(group, columns=["_original"]).column(0)
                ids.append(pl.Series(ROW_ID, wanted[lo:hi], dtype=pl.Int64))
                texts.append(pl.Series("_original", text.take(pa.array(wanted[lo:hi] - start)), dtype=pl.String))
            start += rows
    originals = pl.DataFrame([pl.concat(ids), pl.concat(texts)])
    return quarantined.join(originals, on=ROW_ID, how="left", maintain_order="left", validate="m:1")


def _days_of_sorted(frame: pl.DataFrame) -> dict[tuple[date], pl.DataFrame]:
    """``partition_by("_dt", as_dict=True)`` of a frame sorted by ``_dt``, without copying it.

    Each day is a slice (a view) of ``frame``: ``partition_by`` copied every accepted row once
    more (0.75 GB on a delivery day of 5 M reviews).
    """
    days = frame.select(pl.col("_dt").unique(maintain_order=True).alias("d"),
                        pl.col("_dt").unique_counts().alias("n"))
    out: dict[tuple[date], pl.DataFrame] = {}
    offset = 0
    for d, n in days.iter_rows():
        out[(d,)] = frame.slice(offset, n)
        offset += n
    return out


def _registry_first_seen(lake: Lake, ctx: RunContext) -> pl.DataFrame:
    """Registry membership as of each delivery day: the first day each merchant was delivered."""
    reg = lake.scan_partitions(_resolved_staged_dirs(lake, ctx, "merchants", None, ctx.day))
    if reg is None:
        return pl.DataFrame(schema={"merchant_id": pl.String, "first_seen": pl.Date})
    return reg.group_by("merchant_id").agg(pl.col("_dt").min().alias("first_seen")).collect(engine="in-memory")


def _typed_rows(lake: Lake, ctx: RunContext, source: str, d: date | None = None) -> int:
    """Typed rows of a source this attempt must validate, or of its delivery day ``d`` (Parquet footers)."""
    import pyarrow.parquet as pq

    days = [d] if d is not None else [date.fromisoformat(x) for x in ctx.days_to_stage.get(source, [])]
    return sum(pq.read_metadata(lake.path(_typed_file(ctx, source, day))).num_rows for day in days)


#: Most typed rows validated at once. The full recompute validates a source in batches of whole
#: delivery days of about this many rows, so its peak memory is bounded by the batch, not the history
#: (the Great Expectations suite runs on a pandas copy of the batch).
VALIDATE_BATCH_ROWS = 1_000_000


def _day_batches(lake: Lake, ctx: RunContext, source: str, days: list[date],
                 batch_rows: int = VALIDATE_BATCH_ROWS) -> list[list[date]]:
    """Consecutive delivery days grouped into batches of at most ``batch_rows`` typed rows.

    A day is never split (duplicates, conflicts and the accounting are per delivery day); a day
    larger than the limit is a batch of its own. At least one batch, possibly empty, is returned.
    """
    batches: list[list[date]] = [[]]
    rows = 0
    for d in days:
        n = _typed_rows(lake, ctx, source, d)
        if batches[-1] and rows + n > batch_rows:
            batches.append([])
            rows = 0
        batches[-1].append(d)
        rows += n
    return batches


def _prior_staged_dirs(lake: Lake, ctx: RunContext, source: str) -> list[str]:
    new = ctx.days_to_stage.get(source, [])
    if not new:
        return []
    hi = max(date.fromisoformat(d) for d in new)
    return [staged_dir(source, d) for d in _staged_days(lake, source) if d < hi and d.isoformat() not in new]


def evaluate_gate(lake: Lake, ctx: RunContext, policy: Policy, files: dict[str, Any],
                  validation: dict[str, Any]) -> dict[str, Any]:
    """The fail-closed batch rules. Returns every check with its numbers and what tripped."""
    g = policy.gate
    checks: list[dict[str, Any]] = []
    tripped: list[dict[str, Any]] = []
    for source in STAGE_ORDER:
        for failure in files[source]["file_failures"]:
            check = {"rule": f"file:{failure['rule']}", "source": source, "file": failure["file"],
                     "message": failure["message"], "hint": failure.get("hint"),
                     "action": "fail_run" if g.file_failure == "fail_run" else "file skipped"}
            checks.append(check)
            if g.file_failure == "fail_run":
                tripped.append(check)
        for d_iso, rep in validation[source]["staged_days"].items():
            read = rep["read"]
            share = rep["quarantined"] / read if read else 0.0
            check = {"rule": "quarantine_share", "source": source, "dt": d_iso, "value": round(share, 6),
                     "limit": g.max_quarantine_share,
                     "message": f"{source} dt={d_iso}: {rep['quarantined']} of {read} rows quarantined "
                                f"({share:.1%}; limit {g.max_quarantine_share:.1%})"}
            # A share says little about a handful of rows: tiny deliveries are quarantined row by
            # row but do not stop the run on their own.
            bad = share > g.max_quarantine_share and read >= g.min_rows_for_share
            if bad or d_iso == ctx.score_date:
                checks.append(check | {"passed": not bad})
            if bad:
                tripped.append(check)
    day = ctx.day
    for source in g.expected_daily_sources:
        # A delivery is at least one file that was read (an empty or header-only file counts: "no
        # rows today"); an empty folder, or one holding only skipped or misnamed files, does not.
        prefix = f"landing/{source}/dt={day.isoformat()}/"
        present = any(f["file"].startswith(prefix) for f in files[source]["files"])
        check = {"rule": "missing_source", "source": source, "dt": day.isoformat(), "value": present,
                 "message": f"no readable {source} file landed in {prefix} (expected daily)"}
        checks.append(check)
        if not present:
            tripped.append(check)
    lo_mult, hi_mult = g.volume_band
    for source in STAGE_ORDER:
        rep = validation[source]["staged_days"].get(day.isoformat())
        if rep is None:
            continue
        history = []
        for k in range(1, g.volume_history_days + 1):
            d = day - timedelta(days=k)
            acc = validation[source]["staged_days"].get(d.isoformat()) or lake.read_json(
                f"{staged_dir(source, d)}/_accounting.json")
            if acc is not None:
                history.append(acc["accepted_at_staging"])
        small = bool(history) and sorted(history)[len(history) // 2] < g.volume_min_median_rows
        if len(history) < g.volume_min_history_days or source == "merchants" or small:
            checks.append({"rule": "volume_band", "source": source, "dt": day.isoformat(), "skipped":
                           "registry deliveries are change sets" if source == "merchants"
                           else f"trailing median below {g.volume_min_median_rows} rows: too small to judge"
                           if small else f"history of {len(history)} days < {g.volume_min_history_days}"})
            continue
        median = sorted(history)[len(history) // 2]
        value = rep["accepted_at_staging"]
        ok = median == 0 or lo_mult * median <= value <= hi_mult * median
        check = {"rule": "volume_band", "source": source, "dt": day.isoformat(), "value": value,
                 "median": median, "band": [lo_mult * median, hi_mult * median],
                 "message": f"{source} dt={day.isoformat()}: {value} accepted rows is outside "
                            f"{lo_mult}×–{hi_mult}× the trailing median {median}"}
        checks.append(check)
        if not ok:
            tripped.append(check)
    # File-level failures first: they are the root cause when both kinds trip.
    tripped.sort(key=lambda c: not c["rule"].startswith("file:"))
    overridden = [c["rule"] for c in tripped] if g.override else []
    if overridden:
        log.warning("gate.override is set: publishing despite %s", ", ".join(overridden))
    return {"passed": not tripped, "tripped": tripped, "checks": checks, "override": g.override,
            "overridden": overridden}


# ------------------------------------------------------------------------------- score
def load_inputs(lake: Lake, ctx: RunContext, policy: Policy, tz: str,
                members: pl.Series | None = None, buckets: tuple[int, int] | None = None) -> dict[str, pl.LazyFrame]:
    """Current (as-of the score date) inputs for every source, limited to the window.

    Reviews come as daily aggregates (:mod:`transforms.aggregates`), built only for
    delivery days that have none yet under the current aggregate key; sales, complaints
    and returns as the current-version tables :func:`prepare_score` built
    (:mod:`transforms.current`).

    Parameters
    ----------
    lake, ctx, policy, tz
        The run's lake, context, policy and business time zone.
    members : pl.Series, optional
        One shard's merchant ids; ``None`` loads every merchant.
    buckets : tuple of int, optional
        The shard's bucket range: only the current-version files holding it are read.
    """
    from transforms.current import WINDOW_SOURCES, scan_current, window_start
    from transforms.validation import current_versions

    ws = window_start(ctx.day, policy)
    mine = None if members is None else pl.col("merchant_id").is_in(members.implode())
    out: dict[str, pl.LazyFrame] = {}
    for source in STAGE_ORDER:
        spec = SOURCES[source]
        if source == "reviews":
            scan = review_aggregates(lake, ctx, policy, tz, ws)
        elif source in WINDOW_SOURCES:
            scan = scan_current(lake, ctx, source, buckets)
        else:  # the registry: every version ever delivered, keyed by merchant
            registry = lake.scan_partitions(_resolved_staged_dirs(lake, ctx, source, None, ctx.day))
            if registry is None:
                from transforms.staging import empty_typed

                registry = empty_typed(spec).with_columns(pl.lit(0, pl.UInt64).alias("_row_hash")).lazy()
            scan = current_versions(registry if mine is None else registry.filter(mine), spec)
        out[source] = scan if mine is None or source == "merchants" else scan.filter(mine)
    return out


def review_aggregates(lake: Lake, ctx: RunContext, policy: Policy, tz: str, ws: date) -> pl.LazyFrame:
    """The window's daily review aggregates, building missing or stale partitions into the attempt."""
    from transforms.aggregates import REVIEW_AGG_SCHEMA, agg_key, review_day_aggregates

    key = agg_key(policy, tz)
    files: list[str] = []
    switches: list[list[str]] = ctx.notes.setdefault("agg_switches", [])
    for staged in _resolved_staged_dirs(lake, ctx, "reviews", ws, ctx.day):
        d_iso = staged.rsplit("dt=", 1)[1]
        public = f"agg/reviews/dt={d_iso}"
        ready = _review_aggregate_files(lake, ctx, key, d_iso)
        if ready is not None:
            files += ready
            pair = [public, f"{ctx.work}/{public}"]
            if ready[0].startswith(str(lake.path(ctx.work))) and pair not in switches:
                switches.append(pair)  # built by an earlier try of this task, whose notes were lost
            continue
        src = lake.scan_partitions([staged])
        agg = (review_day_aggregates(src, policy, tz).collect(engine="in-memory") if src is not None
               else pl.DataFrame(schema=REVIEW_AGG_SCHEMA))
        rel = f"{ctx.work}/{public}/part-0.parquet"
        lake.write_parquet(agg.to_arrow(), rel, metadata={"agg_key": key, "run_id": ctx.run_id,
                                                           "grain": "merchant, event day, rating class"})
        files.append(str(lake.path(rel)))
        switches.append([public, f"{ctx.work}/{public}"])
    if not files:
        return pl.DataFrame(schema=REVIEW_AGG_SCHEMA).lazy()
    return pl.scan_parquet(files, schema=REVIEW_AGG_SCHEMA)


def _review_aggregate_files(lake: Lake, ctx: RunContext, key: str, d_iso: str) -> list[str] | None:
    """A delivery day's usable aggregate files, or ``None`` when it must be built.

    Usable: built earlier in this attempt (by prepare_score), or published under the current
    aggregate key for a day this run did not restage.
    """
    import pyarrow.parquet as pq

    public = f"agg/reviews/dt={d_iso}"
    built = lake.parquet_files(f"{ctx.work}/{public}")
    if built:
        return built
    existing = lake.parquet_files(public)
    if d_iso not in ctx.days_to_stage.get("reviews", []) and existing and \
            (pq.read_schema(existing[0]).metadata or {}).get(b"agg_key", b"").decode() == key:
        return existing
    return None


def _review_rows_to_aggregate(lake: Lake, ctx: RunContext, ws: date) -> int:
    """Staged reviews of the window's days this run staged: what :func:`review_aggregates` builds.

    Sizes its job in the worker pool only. Days whose stored aggregate has a stale key are
    rebuilt too but not counted: telling them apart reads every day's footer, which
    :func:`review_aggregates` does anyway.
    """
    import pyarrow.parquet as pq

    restaged = set(ctx.days_to_stage.get("reviews", []))
    return sum(pq.read_metadata(f).num_rows
               for staged in _resolved_staged_dirs(lake, ctx, "reviews", ws, ctx.day)
               if staged.rsplit("dt=", 1)[1] in restaged
               for f in lake.parquet_files(staged))


def _review_aggregates_job(ctx_json: dict[str, Any], tz: str, ws: date) -> list[list[str]]:
    """:func:`review_aggregates` in a worker process: builds the missing days, returns their switches."""
    ctx = RunContext.from_json(ctx_json)
    ctx.notes["agg_switches"] = []
    try:
        review_aggregates(Lake(ctx.root), ctx, _policy(ctx), tz, ws)
        return list(ctx.notes["agg_switches"])
    finally:
        release_memory()


def score(ctx: RunContext, settings: Settings | None = None) -> RunContext:
    """Compute scores, enforcement state and actions into the attempt folder.

    Runs :func:`prepare_score`, :func:`score_shard` for every shard of the policy,
    then :func:`gather_scores` — the same steps the DAG fans out over workers.
    """
    st = _settings(settings, ctx.root)
    # One pool for the tables and the shards (a worker pays its imports once). The tables are
    # built side by side; the shards run one at a time, in a worker. A shard's Polars plans keep
    # both cores busy already: two side by side took as long at L (four shards: 15.0 s against
    # 15.6 s in turn) and held two shards' memory (nightly peak 3.4 GiB against 2.3 GiB). On
    # several machines the DAG maps the shards on Airflow workers instead.
    rows = _window_rows(ctx)
    workers = _score_pool_size(st, rows)
    with worker_pool(workers, st.log_format) as pool:
        ctx = prepare_score(ctx, st, pool=pool, workers=workers, rows=rows)
        t0 = time.perf_counter()
        for k in range(ctx.notes["shards"]):
            map_largest_first(pool, _score_shard_job, {f"shard-{k}": (1, (ctx.to_json(), k, st))})
        _timed(ctx, "score_shards", t0)  # the stage's wall time; the shards' own are in notes
    return gather_scores(ctx, st)


def _window_rows(ctx: RunContext) -> dict[str, int]:
    """Staged rows in the window of each current-version table's source (from Parquet footers)."""
    from transforms.current import WINDOW_SOURCES, window_rows

    lake = Lake(ctx.root)
    policy = _policy(ctx)
    return {s: window_rows(lake, ctx, policy, s) for s in WINDOW_SOURCES}


def _score_pool_size(st: Settings, rows: dict[str, int]) -> int:
    return pool_size(st.workers, rows.values(), min_work=st.parallel_min_rows)


def _score_shard_job(ctx_json: dict[str, Any], shard: int, st: Settings) -> str:
    try:
        return score_shard(RunContext.from_json(ctx_json), shard, st)
    finally:
        release_memory()


def prepare_score(ctx: RunContext, settings: Settings | None = None, *,
                  pool: ProcessPoolExecutor | Literal["auto"] | None = "auto", workers: int = 1,
                  rows: dict[str, int] | None = None) -> RunContext:
    """Build what every shard shares: missing daily review aggregates and the current-version tables.

    Parameters
    ----------
    pool, workers
        Worker processes for the three tables and their number: ``"auto"`` (the default)
        starts a pool when the window is large enough, ``None`` builds them here, one
        after another.
    rows
        :func:`_window_rows`, when the caller has read them already (to size its pool).
    """
    from transforms.current import PASS_ROWS, WINDOW_SOURCES, build_current_job, table_rel, window_start
    from transforms.sharding import validate_shards

    t0 = time.perf_counter()
    st = _settings(settings, ctx.root)
    lake = Lake(ctx.root)
    policy = _policy(ctx)
    validate_shards(policy.shards)
    ws = window_start(ctx.day, policy)
    rows = rows if rows is not None else _window_rows(ctx)
    with contextlib.ExitStack() as stack:
        if pool == "auto":
            workers = _score_pool_size(st, rows)
            executor = stack.enter_context(worker_pool(workers, st.log_format))
        else:
            executor = pool
        # Workers side by side each hold one pass of a rebuild: the passes shrink to match.
        pass_rows = max(PASS_ROWS // (workers if executor is not None else 1), 1)
        # The review aggregates share the pool: in a full recompute, 180 days of them took as
        # long as the three tables (27 s at L), one after the other in this process.
        jobs: dict[str, tuple[int, tuple[Any, ...]]] = {
            s: (rows[s], (build_current_job, ctx.to_json(), s, pass_rows)) for s in WINDOW_SOURCES}
        jobs["reviews"] = (_review_rows_to_aggregate(lake, ctx, ws),
                           (_review_aggregates_job, ctx.to_json(), st.business_timezone, ws))
        done = map_largest_first(executor, call, jobs)
    switches: list[list[str]] = ctx.notes.setdefault("agg_switches", [])
    for pair in done.pop("reviews"):
        if pair not in switches:  # a retried prepare_score task built the same day again
            switches.append(pair)
    ctx.notes["current_tables"] = done
    for s in WINDOW_SOURCES:
        pair = [table_rel(s, ctx.day), f"{ctx.work}/{table_rel(s, ctx.day)}"]
        if pair not in switches:  # a retried prepare_score task built the same table again
            switches.append(pair)
    ctx.notes["shards"] = policy.shards
    _timed(ctx, "score_prepare", t0)
    _save_ctx(lake, ctx)
    return ctx


def score_shard(ctx: RunContext, shard: int, settings: Settings | None = None) -> str:
    """Per-merchant evidence for one shard's merchants, written to the attempt folder.

    Everything here is per merchant (windows, campaign detection, counts), so shards
    are independent; category priors, percentiles and tiers need all merchants and
    are left to :func:`gather_scores`. Returns the shard's evidence path.
    """
    from transforms.enforcement import evidence_signals
    from transforms.manipulation import discount_complaints, discount_reviews
    from transforms.scoring import ScoringInputs, compute_evidence
    from transforms.sharding import shard_bucket_range, shard_members

    t0 = time.perf_counter()
    st = _settings(settings, ctx.root)
    lake = Lake(ctx.root)
    policy = _policy(ctx)
    tz = st.business_timezone
    # Every shard (also a single one) keeps only registered merchants, as scoring always has.
    registry_ids = lake.scan_partitions(_resolved_staged_dirs(lake, ctx, "merchants", None, ctx.day))
    ids = (registry_ids.select("merchant_id").unique().collect(engine="in-memory") if registry_ids is not None
           else pl.DataFrame(schema={"merchant_id": pl.String}))
    members = shard_members(ids, shard, ctx.notes["shards"]).get_column("merchant_id")
    inputs = load_inputs(lake, ctx, policy, tz, members, shard_bucket_range(shard, ctx.notes["shards"]))
    registry = inputs["merchants"].select(
        "merchant_id", "name", "category", "registered_on", "license_expires_on", "status")
    # Read once: scoring and the enforcement signals both use them (each collect would re-read the lake).
    sales, returns = (inputs[s].collect(engine="in-memory").lazy() for s in ("sales", "returns"))
    reviews = discount_reviews(inputs["reviews"], policy, tz)
    # Scoring and the enforcement signals both read the discounted complaints: compute them once.
    complaints = discount_complaints(inputs["complaints"], policy, tz).collect(engine="in-memory").lazy()
    _, end = business_day_bounds(ctx.day, st.tz)
    ev = compute_evidence(ScoringInputs(registry, sales, reviews, complaints, returns), ctx.day, end, policy, tz)
    rel = f"{ctx.work}/evidence/shard={shard:03d}.parquet"
    frame = ev.collect(engine="in-memory").sort("merchant_id")
    # Signals of the enforcement guards and hard rules (recent complaints, distinct buyers affected).
    frame = frame.join(evidence_signals(complaints, returns, sales, frame, ctx.day, policy, tz),
                       on="merchant_id", how="left", maintain_order="left")
    lake.write_parquet(frame.to_arrow(), rel)
    # Shards may run in other processes (Airflow workers): their timings travel beside the evidence.
    lake.write_json({"seconds": round(time.perf_counter() - t0, 3), "merchants": frame.height},
                    f"{ctx.work}/evidence/shard={shard:03d}.json")
    return rel


def gather_scores(ctx: RunContext, settings: Settings | None = None) -> RunContext:
    """Score all merchants from the shards' evidence, run enforcement, write the outputs.

    Enforcement runs here, before anything is written, because the published
    ``tier`` is the *enforced* tier (after hysteresis and guards), not the raw band.
    """
    from transforms.enforcement import decide
    from transforms.schemas import ACTIONS_SCHEMA, ENFORCEMENT_STATE_SCHEMA
    from transforms.scoring import score_merchants

    t0 = time.perf_counter()
    lake = Lake(ctx.root)
    policy = _policy(ctx)
    shards = ctx.notes["shards"]
    paths = [lake.path(f"{ctx.work}/evidence/shard={k:03d}.parquet") for k in range(shards)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ReputationError(f"evidence of {len(missing)} shard(s) is missing: {missing[:3]}",
                              hint="rerun the score_shard tasks of this run, then gather")
    # Sorted by merchant so category sums add up in the same order whatever the shard count.
    ev = pl.read_parquet([str(p) for p in paths]).sort("merchant_id")
    shard_seconds = [(lake.read_json(f"{ctx.work}/evidence/shard={k:03d}.json") or {}).get("seconds", 0.0)
                     for k in range(shards)]
    # Mapped on Airflow workers the shards' stage has no single wall time: their sum stands in.
    ctx.timings.setdefault("score_shards", round(sum(shard_seconds), 3))
    ctx.notes["shard_seconds"] = shard_seconds
    scored = score_merchants(ev.lazy(), ctx.day, policy).with_columns(pl.lit(ctx.run_id).alias("run_id"))
    df = scored.collect(engine="in-memory").sort("merchant_id")
    decision = decide(df, latest_before(lake, "state/enforcement", ctx.day), recent_enforcement(lake, ctx.day),
                      policy, ctx.day, ctx.run_id)
    df = decision.scores.sort("merchant_id")
    meta = {"schema_version": SCHEMA_VERSION, "policy_version": policy.version, "run_id": ctx.run_id,
            "grain": "one row per merchant in the registry as of score_date"}
    lake.write_parquet(table_from_polars(df, SCORES_SCHEMA), f"{ctx.work}/scores/part-0.parquet", metadata=meta)
    lake.write_parquet(table_from_polars(decision.state.sort("merchant_id"), ENFORCEMENT_STATE_SCHEMA),
                       f"{ctx.work}/state/part-0.parquet",
                       metadata=meta | {"grain": "one row per merchant: enforcement state after score_date"})
    if decision.released_state is not None:  # what `reputation release` publishes after review
        lake.write_parquet(table_from_polars(decision.released_state.sort("merchant_id"), ENFORCEMENT_STATE_SCHEMA),
                           f"{ctx.work}/held_state/part-0.parquet",
                           metadata=meta | {"grain": "one row per merchant: state after score_date if released"})
    actions_dir = "held_actions" if decision.held else "actions"
    lake.write_parquet(table_from_polars(decision.actions.sort("merchant_id"), ACTIONS_SCHEMA),
                       f"{ctx.work}/{actions_dir}/part-0.parquet",
                       metadata=meta | {"grain": "one row per merchant whose enforcement state changes on score_date"})
    ctx.notes["scores_rows"] = df.height
    ctx.notes["actions_rows"] = decision.actions.height
    ctx.notes["enforcement"] = decision.summary
    ctx.notes["held"] = decision.held
    ctx.notes["tier_counts"] = dict(df.group_by("tier").len().sort("tier").iter_rows())
    _timed(ctx, "score_gather", t0)
    _save_ctx(lake, ctx)
    return ctx


def latest_before(lake: Lake, table: str, day: date) -> pl.DataFrame | None:
    """The newest partition of ``table`` (keyed ``score_date``) strictly before ``day``."""
    earlier = [d for d in lake.partitions(table, "score_date") if d < day]
    if not earlier:
        return None
    files = lake.parquet_files(f"{table}/score_date={earlier[-1].isoformat()}")
    return pl.read_parquet(files) if files else None


def recent_enforcement(lake: Lake, day: date, days: int = 56) -> list[dict[str, Any]]:
    """Enforcement summaries of published runs in the ``days`` before ``day`` (oldest first)."""
    out = []
    for d in lake.partitions("runs", "score_date"):
        if day - timedelta(days=days) <= d < day:
            m = manifest_for(lake, d)
            if m and m.get("status") in ("published", "held") and m.get("enforcement"):
                out.append({"score_date": d.isoformat(), **m["enforcement"]})
    return out


def publish(ctx: RunContext, settings: Settings | None = None) -> RunResult:
    """Check the scores with their suite, write the manifest and commit atomically."""
    from transforms.expectations import ROW_ID, load_suite, run_suite

    t0 = time.perf_counter()
    lake = Lake(ctx.root)
    policy = _policy(ctx)
    scores = pl.read_parquet(lake.path(f"{ctx.work}/scores/part-0.parquet"))
    suite = load_suite("scores")
    for e in suite["expectations"]:
        if e["kwargs"].get("value_set") == "$policy_tiers":
            e["kwargs"]["value_set"] = policy.tier_names
    res = run_suite(scores.drop("reason_codes", "reason_details", "reason_points", "discount_reasons")
                    .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_ID)),
                    suite, docs_dir=lake.path(f"{ctx.work}/runs/data_docs"), batch_name="scores")
    forbidden = [c for c in scores.columns if c in ("reviewer_id", "complainant_id")]
    if not res.success or forbidden:
        raise ReputationError(f"published-scores suite failed: {sorted(res.row_failures) + res.batch_failures} "
                              f"{forbidden or ''}".strip(),
                              hint="this is a bug in scoring; nothing was published. Report it with the manifest.")
    _timed(ctx, "publish_checks", t0)
    held = bool(ctx.notes.get("held"))
    status, exit_code = ("held", 4) if held else ("published", 0)
    manifest = build_manifest(lake, ctx, policy, status=status, exit_code=exit_code)
    actions_dir = "held_actions" if held else "actions"
    manifest["outputs"] = {
        "scores": {"path": f"scores/score_date={ctx.score_date}", "rows": scores.height},
        actions_dir: {"path": f"{actions_dir}/score_date={ctx.score_date}", "rows": ctx.notes.get("actions_rows", 0)},
        "enforcement_state": {"path": f"state/enforcement/score_date={ctx.score_date}"},
        **({"enforcement_state_if_released": {"path": f"state/enforcement_held/score_date={ctx.score_date}"}}
           if held else {}),
        "quarantine": [quarantine_dir(s, date.fromisoformat(d)) for s in STAGE_ORDER
                       for d in ctx.days_to_stage[s]],
        "data_docs": f"runs/score_date={ctx.score_date}/data_docs/index.html",
    }
    manifest["scores_suite"] = {"suite": res.suite, "success": res.success}
    # The governance report goes into the attempt's run folder, so it becomes visible with the manifest.
    manifest["outputs"]["report"] = _attempt_report(lake, ctx, policy, manifest, scores, actions_dir)
    lake.write_json(manifest, f"{ctx.work}/runs/manifest.json")
    switches: list[tuple[str, str]] = []
    for source in STAGE_ORDER:
        for d_iso in ctx.days_to_stage[source]:
            d = date.fromisoformat(d_iso)
            switches.append((staged_dir(source, d), f"{ctx.work}/{staged_dir(source, d)}"))
            switches.append((quarantine_dir(source, d), f"{ctx.work}/{quarantine_dir(source, d)}"))
    switches += [(str(a), str(b)) for a, b in ctx.notes.get("agg_switches", [])]
    switches.append((f"scores/score_date={ctx.score_date}", f"{ctx.work}/scores"))
    switches.append((f"state/enforcement/score_date={ctx.score_date}", f"{ctx.work}/state"))
    switches.append((f"state/enforcement_held/score_date={ctx.score_date}", f"{ctx.work}/held_state" if held else ""))
    # Held actions never reach actions/: a rerun that holds also withdraws an earlier feed of the date.
    other = "actions" if held else "held_actions"
    switches.append((f"{other}/score_date={ctx.score_date}", ""))
    switches.append((f"{actions_dir}/score_date={ctx.score_date}", f"{ctx.work}/{actions_dir}"))
    switches.append((f"runs/score_date={ctx.score_date}", f"{ctx.work}/runs"))
    # The date's own outputs (scores onward) switch together with one atomic rename, the manifest last;
    # staged, quarantine and aggregate partitions of delivery days switch one by one before them.
    own = switches.index((f"scores/score_date={ctx.score_date}", f"{ctx.work}/scores"))
    with lake.lock(f"commit-{ctx.score_date}", wait_seconds=600):
        lake.commit(switches[:own], f"score_date={ctx.score_date}", together=switches[own:])
    _cleanup_attempt(lake, ctx)
    from transforms.current import prune_tables

    prune_tables(lake)
    _timed(ctx, "publish", t0)
    manifest_path = str(lake.path(f"runs/score_date={ctx.score_date}/manifest.json"))
    message = f"published {scores.height} scores for {ctx.score_date}"
    if held:
        message += (f"; {ctx.notes.get('actions_rows', 0)} enforcement actions HELD for human review "
                    f"({(ctx.notes.get('enforcement') or {}).get('hold_reason')}); "
                    f"release with `reputation release --date {ctx.score_date}` after review")
    return RunResult(ctx.day, status, exit_code, ctx.run_id, manifest_path, message, manifest)


def _attempt_report(lake: Lake, ctx: RunContext, policy: Policy, manifest: dict[str, Any], scores: pl.DataFrame,
                    actions_dir: str) -> str | dict[str, str]:
    """Render ``report.html`` into the attempt's run folder; returns its public path.

    A bug in the report never blocks publishing scores and actions: it is logged and
    recorded in the manifest (``outputs.report.error``) instead.
    """
    from transforms.report import REPORT_NAME, ReportInputs, render_report

    t0 = time.perf_counter()
    rel = f"runs/score_date={ctx.score_date}/{REPORT_NAME}"
    try:
        files = lake.parquet_files(f"{ctx.work}/{actions_dir}")
        page = render_report(ReportInputs(
            day=ctx.day, manifest=manifest | {"outputs": manifest["outputs"] | {"report": rel}}, scores=scores,
            previous=latest_before(lake, "scores", ctx.day), actions=pl.read_parquet(files) if files else None,
            tiers=[(t.name, float(t.min_score)) for t in policy.tiers]))
        lake.write_text(page, f"{ctx.work}/runs/{REPORT_NAME}")
    except Exception as exc:  # the report is a view; the outputs it shows must still publish
        log.exception("governance report failed; publishing without it")
        return {"error": f"{type(exc).__name__}: {exc}"}
    _timed(ctx, "report", t0)
    return rel


def _cleanup_attempt(lake: Lake, ctx: RunContext) -> None:
    import shutil

    for leftover in ("typed", "evidence", "context.json", "files.json", "validation.json", "gate.json"):
        p = lake.path(f"{ctx.work}/{leftover}")
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def build_manifest(lake: Lake, ctx: RunContext, policy: Policy, *, status: str, exit_code: int,
                   error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run manifest: per-source accounting, validation, gate, policy, timings, status."""
    from transforms.validation import accounting_as_of

    files = lake.read_json(f"{ctx.work}/files.json") or {}
    validation = lake.read_json(f"{ctx.work}/validation.json") or {}
    gate = lake.read_json(f"{ctx.work}/gate.json")
    sources: dict[str, Any] = {}
    for source in SOURCE_NAMES:
        entry: dict[str, Any] = {}
        if source in files:
            entry.update({k: files[source][k] for k in ("file_failures", "bad_paths", "extra_columns")})
            entry["files_read"] = len(files[source]["files"])
        if source in validation:
            entry["validation"] = {k: validation[source][k] for k in ("suite", "success", "batch_failures")}
            try:
                entry.update(accounting_as_of(lake, ctx, source))
            except ReputationError:
                raise
            except Exception as exc:  # accounting must never hide the real failure
                entry["accounting_error"] = str(exc)
        sources[source] = entry
    return {
        "schema_version": SCHEMA_VERSION,
        "score_date": ctx.score_date,
        "run_id": ctx.run_id,
        "attempt_id": ctx.attempt_id,
        "status": status,
        "exit_code": exit_code,
        "policy": {"version": policy.version, "digest": policy.digest, "path": ctx.policy_path or "packaged"},
        "code_version": __version__,
        "business_timezone": ctx.notes.get("business_timezone"),
        "pseudonymisation": {"method": "HMAC-SHA256",
                             "development_key": bool(ctx.notes.get("development_pseudonym_key"))},
        "sources": sources,
        "gate": gate,
        "timings_seconds": ctx.timings,
        "current_tables": ctx.notes.get("current_tables"),
        "tier_counts": ctx.notes.get("tier_counts"),
        "enforcement": ctx.notes.get("enforcement"),
        "error": error,
    }


def record_failure(ctx: RunContext, exc: BaseException, *, stage: str) -> str:
    """Write a failed run's manifest; publish it only when the date has no published run.

    A failed run must leave previous outputs untouched, so an existing published
    manifest stays; the failed attempt's manifest is kept under ``runs/_failed``.
    """
    lake = Lake(ctx.root)
    try:
        policy = _policy(ctx)
    except ReputationError:
        policy = load_policy(None)
    exit_code = getattr(exc, "exit_code", 1)
    error = {"stage": stage, "type": type(exc).__name__, "message": getattr(exc, "message", str(exc)),
             "hint": getattr(exc, "hint", None), "rule": getattr(exc, "rule", None),
             "file": getattr(exc, "path", None)}
    manifest = build_manifest(lake, ctx, policy, status="failed", exit_code=exit_code, error=error)
    # Nothing is published for a failed date, but what validation saw stays inspectable:
    # the Data Docs travel with the manifest, and the rejected rows stay in the attempt folder.
    outputs: dict[str, Any] = {}
    if lake.exists(f"{ctx.work}/runs/data_docs/index.html"):
        outputs["data_docs"] = f"runs/score_date={ctx.score_date}/data_docs/index.html"
    held = [f"{ctx.work}/{quarantine_dir(s, date.fromisoformat(d))}" for s in STAGE_ORDER
            for d in ctx.days_to_stage.get(s, [])]
    import pyarrow.parquet as pq

    held_quarantine = [q for q in held  # only partitions that hold rejected rows
                       if any(pq.read_metadata(f).num_rows for f in lake.parquet_files(q))]
    if held_quarantine:
        outputs["unpublished_quarantine"] = held_quarantine
    manifest["outputs"] = outputs
    rel = f"runs/_failed/score_date={ctx.score_date}/{ctx.attempt_id}.json"
    lake.write_json(manifest, rel)
    published = lake.read_json(f"runs/score_date={ctx.score_date}/manifest.json")
    if published is None:
        lake.write_json(manifest, f"{ctx.work}/runs/manifest.json")
        lake.commit([(f"runs/score_date={ctx.score_date}", f"{ctx.work}/runs")],
                    f"score_date={ctx.score_date}")
        return str(lake.path(f"runs/score_date={ctx.score_date}/manifest.json"))
    return str(lake.path(rel))


# --------------------------------------------------------------------------------- run
def run_date(score_date: date, settings: Settings | None = None, *, root: str | None = None,
             wait_seconds: float = 0.0) -> RunResult:
    """Run all four steps for one date under the date's lock.

    Returns a :class:`RunResult`; data problems come back as a failed result with
    exit code 3 (never an exception), other :class:`ReputationError` propagate.
    """
    st = _settings(settings, root)
    lake = Lake(st.root)
    d = score_date.isoformat()
    with lake.lock(f"score_date={d}", wait_seconds=wait_seconds), _preloading_validation():
        # A date whose held actions a person released: keep what they released, to compare below.
        prior = manifest_for(lake, score_date)
        released = (_read_actions(lake, f"actions/score_date={d}")
                    if prior is not None and prior.get("released") else None)
        ctx: RunContext | None = None
        stage = "ingest"
        try:
            ctx = ingest(score_date, st)
            stage = "validate"
            ctx = validate(ctx, st)
            stage = "score"
            ctx = score(ctx, st)
            stage = "publish"
            result = publish(ctx, st)
        except InputRejected as exc:
            if ctx is None:
                raise
            path = record_failure(ctx, exc, stage=stage)
            return RunResult(score_date, "failed", exc.exit_code, ctx.run_id, path, str(exc))
    if result.status == "held" and released is not None:
        held = _read_actions(lake, f"held_actions/score_date={d}")
        if held is not None and _same_actions(held, released):
            # The review already happened for exactly these actions: a rerun reproduces the
            # released day instead of asking people to review it again. Different actions are
            # a different decision and stay held.
            from transforms.enforcement_ops import release_date

            release_date(st, score_date)
            return RunResult(score_date, "published", 0, result.run_id, result.manifest_path,
                             f"{d}: the guard held the same {held.height} action(s) that were released after "
                             "review on an earlier run of this date; released again", result.summary)
    return result


@contextlib.contextmanager
def _preloading_validation() -> Iterator[None]:
    """Import Great Expectations in a thread while the run goes on (ingest needs none of it).

    In a nightly run validate used to start with 3-4 s of imports, idle for the rest of the
    machine; the run's first seconds are ingest, mostly Polars and HMAC. The thread is joined
    before the run returns, so no import is left half-done at interpreter exit.
    """
    import threading

    def load() -> None:
        from transforms.expectations import preload

        try:
            preload()
        except Exception:  # validate imports it again and reports a real problem there
            log.debug("preloading Great Expectations failed", exc_info=True)

    thread = threading.Thread(target=load, name="preload-gx", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _read_actions(lake: Lake, rel: str) -> pl.DataFrame | None:
    files = lake.parquet_files(rel)
    return pl.read_parquet(files) if files else None


def _same_actions(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """The same actions, whatever run wrote them (``run_id`` and row order aside)."""
    def norm(f: pl.DataFrame) -> pl.DataFrame:
        if "run_id" in f.columns and "statement" in f.columns:  # statements quote the run as reference
            f = f.with_columns(pl.Series("statement", [st.replace(r, "") for st, r in
                                                       zip(f["statement"], f["run_id"], strict=True)]))
        return f.drop("run_id", strict=False).sort(sorted(c for c in f.columns if c != "run_id"
                                                          and f.schema[c] != pl.List(pl.String)))
    return a.columns == b.columns and a.height == b.height and norm(a).equals(norm(b))


def manifest_for(lake: Lake, day: date) -> dict[str, Any] | None:
    """The published (or failed, if none published) manifest of a date."""
    data = lake.read_json(f"runs/score_date={day.isoformat()}/manifest.json")
    return data if isinstance(data, dict) else None


def read_scores(lake: Lake, day: date) -> pl.DataFrame:
    """Published scores of one date (empty frame with the schema when none)."""
    files = lake.parquet_files(f"scores/score_date={day.isoformat()}")
    if not files:
        return pl.from_arrow(SCORES_SCHEMA.empty_table())  # type: ignore[return-value]
    return pl.read_parquet(files)


def json_default(o: Any) -> Any:
    if isinstance(o, (date, datetime)):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=json_default, indent=2, ensure_ascii=False)
