"""Window state of the versioned event sources, carried from one night to the next.

Sales, complaints and returns are *versioned*: a later delivery can correct a
merchant-day's sales or move a complaint or return to a new status, and scoring
reads the newest version of each key among the deliveries inside the window
(delivery days ``ws ..= D``, ``ws = D - extended_days + 1``). Working that out
from the staged history means sorting every version in the window (at L, 14.5 M
returns for 5.1 M keys), and each score shard used to do it again for its own
merchants every night.

This module keeps the answer instead: the table ``agg/current/<source>/score_date=D``
holds exactly the current versions for ``D``, one row per key, split into
:data:`GROUPS` files by merchant bucket (:mod:`transforms.sharding`) and sorted by
``(_bucket, _key_hash)``, so a shard reads only its own files and the order of
rows (and so every floating-point sum over them) is the same however it was
built.

The nightly run builds ``D`` from the newest earlier table ``P`` (:func:`build_current`):

* versions are ordered by the source's version column (if any), then delivery day, so
  a version delivered after ``P`` beats ``P``'s row unless its version value is older;
* a key's current version can only change if the key has a version on a delivery day
  that entered the window since ``P`` (``P < d <= D``) — the newest of ``P``'s row and
  those versions — or if ``P``'s row itself was delivered before ``ws_D`` and so left
  the window. Without a version column, every other version of such a key is at least
  as old, so the key leaves; with one, a version delivered later but with an older
  value may remain, so those keys alone are re-versioned from the staged window, read
  through a filter on their key hash (a hash collision only re-versions one more key);
* every other key keeps ``P``'s row: removing older versions does not change the newest.

``P`` is used only if every delivery day it covered is still the staged partition
it read (the same attempt, as in the accounting carry), and its key matches
(:func:`snapshot_key`: this module's version, the window length, the bucket layout
and the Polars version, whose hash function the key hashes come from). Otherwise
the table is rebuilt from the staged window in hash passes of at most
:data:`PASS_ROWS` rows, which bounds memory. Both ways give the same rows; a test
compares them through nightly runs, a late re-delivery and a rerun.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from transforms.schemas import SOURCES, Source
from transforms.sharding import BUCKETS, with_bucket

if TYPE_CHECKING:
    from collections.abc import Callable

    from transforms.lake import Lake
    from transforms.pipeline import RunContext
    from transforms.policy import Policy

#: Bump when the table's definition changes: a stored table with another key is rebuilt.
SNAPSHOT_VERSION = "current-v1"
#: The versioned sources read over the scoring window (the registry is not windowed).
WINDOW_SOURCES = ("sales", "complaints", "returns")
#: Files per table; each holds ``BUCKETS // GROUPS`` whole merchant buckets.
GROUPS = 8
#: Rows of staged history versioned at once by a rebuild (its memory grows with them).
PASS_ROWS = 4_000_000
#: A table further back than this is not carried (the touched keys would be most of the window).
MAX_CARRY_DAYS = 14
#: Tables kept per source: the newest few, so a rerun of a recent date can still carry.
KEEP = 3
HASH_SEED = 0x5C0DE
#: Lineage columns of staged rows the table drops (only versioning needs them).
_LINEAGE_DROPPED = ("_file", "_row_number", "_row_hash")


def table_rel(source: str, day: date) -> str:
    """The public folder of one source's table for ``day``."""
    return f"agg/current/{source}/score_date={day.isoformat()}"


def part_rel(source: str, day: date, group: int) -> str:
    """The file of one group of a table (named, not listed: ``part-10`` would sort before ``part-2``)."""
    return f"{table_rel(source, day)}/part-{group}.parquet"


def window_start(day: date, policy: Policy) -> date:
    """The first delivery day of ``day``'s window (the extended window: every merchant's look-back)."""
    return day - timedelta(days=policy.window.extended_days - 1)


def snapshot_key(policy: Policy) -> str:
    """Fingerprint of everything the table's rows depend on besides the staged partitions."""
    text = f"{SNAPSHOT_VERSION}|{policy.window.extended_days}|{BUCKETS}|{GROUPS}|{pl.__version__}|{HASH_SEED}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def key_hash(source: Source) -> pl.Expr:
    """A 64-bit hash of the source's key (equal keys, equal hashes; collisions only cost work)."""
    from transforms.validation import key_expr

    return key_expr(list(source.key)).hash(seed=HASH_SEED).alias("_key_hash")


def group_of_bucket() -> pl.Expr:
    """The file a row belongs in: its bucket's group."""
    return (pl.col("_bucket") // (BUCKETS // GROUPS)).cast(pl.Int16)


def groups_for(bucket_lo: int, bucket_hi: int) -> list[int]:
    """The groups whose files hold buckets ``[bucket_lo, bucket_hi)``."""
    width = BUCKETS // GROUPS
    return list(range(bucket_lo // width, (bucket_hi - 1) // width + 1))


def newest_versions(frame: pl.DataFrame, source: Source) -> pl.DataFrame:
    """The newest version of each key in ``frame`` (which carries ``_key_hash``), in ``frame``'s order.

    Rows whose key hash occurs once are their key's only version, so only rows with a
    repeated hash go through the version sort (for sales, nearly none), and only their key
    and ordering columns: the winners are then picked from ``frame`` by position.
    """
    from transforms.validation import current_versions, version_order

    repeated = frame.get_column("_key_hash").is_duplicated()
    if not repeated.any():
        return frame
    narrow = frame.select(*source.key, *version_order(source)).with_row_index("_i").filter(repeated)
    winners = current_versions(narrow.lazy(), source).select("_i").collect(engine="in-memory").get_column("_i")
    keep = ~repeated | pl.int_range(pl.len(), dtype=pl.UInt32).is_in(winners.implode())
    return frame.filter(keep)


def _finish(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Table rows: the kept columns plus bucket, key hash and the group file they go to."""
    out = with_bucket(frame.select([*columns, "_key_hash"]))
    return out.filter(pl.col("_bucket").is_not_null()).with_columns(group_of_bucket().alias("_g"))


def _columns(schema: pl.Schema) -> list[str]:
    return [c for c in schema.names() if c not in _LINEAGE_DROPPED and c not in ("_key_hash", "_bucket")]


def _by_group(frame: pl.DataFrame) -> dict[int, pl.DataFrame]:
    return {int(g): sub.drop("_g") for (g,), sub in frame.partition_by("_g", as_dict=True).items()}


def _write_group(lake: Lake, frames: list[pl.DataFrame], rel: str, schema: dict[str, pl.DataType]) -> int:
    """Write one group's rows in the table's order as the file ``rel``; returns the rows.

    The order is bucket, then key hash: whichever way the rows were gathered, they come out
    the same, so sums over them add up in the same order.
    """
    frame = pl.concat([f.select(list(schema)) for f in frames]) if frames else pl.DataFrame(schema=schema)
    order = pl.col("_bucket").cast(pl.UInt64) * (1 << 58) + pl.col("_key_hash") // (1 << 6)
    # A merge of the carried rows (already in order) with the few new ones took longer than this sort.
    frame = frame.sort(order, maintain_order=True)
    # LZ4: the table is rewritten every night and read by every shard; zstd would save a quarter
    # of its disk (208 against 275 MiB for L's returns) for 70 % more writing time.
    lake.write_frame(frame, rel, compression="lz4")
    return frame.height


def _attempts(lake: Lake, ctx: RunContext, dirs: list[str]) -> dict[str, str]:
    from transforms.validation import staged_attempt

    return {d.rsplit("dt=", 1)[1]: staged_attempt(lake, ctx, d) for d in dirs}


def _usable_earlier(lake: Lake, ctx: RunContext, source: str, key: str) -> tuple[date, dict[str, Any]] | None:
    """The newest earlier table this run can carry, with its sidecar, or ``None``."""
    from transforms.pipeline import _resolved_staged_dirs

    earlier = [d for d in lake.partitions(f"agg/current/{source}", "score_date") if d < ctx.day]
    if not earlier or (ctx.day - earlier[-1]).days > MAX_CARRY_DAYS:
        return None
    p_day = earlier[-1]
    meta = lake.read_json(f"{table_rel(source, p_day)}/_table.json")
    if not meta or meta.get("key") != key or not all(lake.exists(part_rel(source, p_day, g)) for g in range(GROUPS)):
        return None
    p_ws = date.fromisoformat(meta["window_start"])
    now = _attempts(lake, ctx, _resolved_staged_dirs(lake, ctx, source, p_ws, p_day))
    if now != meta["staged_attempts"] or "" in now.values():
        return None
    return p_day, meta


def _carry(lake: Lake, ctx: RunContext, source: str, p_day: date, p_ws: date, ws: date, scan: pl.LazyFrame,
           columns: list[str], schema: dict[str, pl.DataType], out: Callable[[int], str]) -> tuple[int, dict[str, Any]]:
    """Write the run's table from the earlier table of ``p_day`` (window ``p_ws ..= p_day``).

    The rules are the module docstring's. Only the entering delivery days are read, and,
    for a source with a version column, the window's rows of keys whose row left it.
    """
    from transforms.pipeline import _resolved_staged_dirs
    from transforms.validation import version_order

    spec = SOURCES[source]
    order = version_order(spec)
    lineage = {c: scan.collect_schema()[c] for c in order if c not in columns}
    entering_scan = lake.scan_partitions(_resolved_staged_dirs(lake, ctx, source, p_day + timedelta(days=1), ctx.day))
    entering = (entering_scan.select([*columns, *lineage]).with_columns(key_hash(spec)).collect(engine="in-memory")
                if entering_scan is not None else pl.DataFrame(schema={**{c: schema[c] for c in columns}, **lineage,
                                                                         "_key_hash": pl.UInt64()}))
    entering = with_bucket(entering).filter(pl.col("_bucket").is_not_null()).with_columns(group_of_bucket().alias("_g"))
    left = pl.col("_dt") < ws
    old = [pl.scan_parquet(lake.path(part_rel(source, p_day, g))) for g in range(GROUPS)]
    rescan = pl.Series("_key_hash", [], pl.UInt64)
    if spec.version_column and p_ws < ws:
        rescan = pl.concat([f.filter(left).select("_key_hash") for f in old]).collect(engine="in-memory").to_series()
    redo = (newest_versions(scan.with_columns(key_hash(spec)).filter(pl.col("_key_hash").is_in(rescan.implode()))
                            .collect(engine="streaming"), spec) if rescan.len() else None)
    fresh = _by_group(_finish(redo, columns)) if redo is not None else {}
    entering = entering.filter(~pl.col("_key_hash").is_in(rescan.implode()))
    by_group = {int(g): sub for (g,), sub in entering.partition_by("_g", as_dict=True).items()}
    rows = 0
    for g in range(GROUPS):
        came = by_group.get(g)
        hit = pl.col("_key_hash").is_in((came.get_column("_key_hash") if came is not None
                                         else pl.Series([], dtype=pl.UInt64)).implode())
        # A rescanned hash is re-versioned whole (another key sharing it included).
        prev = old[g].filter(~left & ~pl.col("_key_hash").is_in(rescan.implode())).collect(engine="in-memory")
        kept = prev.filter(~hit) if came is not None else prev
        new: list[pl.DataFrame] = [fresh[g]] if g in fresh else []
        if came is not None:
            # P's rows lack the delivery-order columns; they never tie with a later delivery's row.
            rivals = prev.filter(hit).with_columns(pl.lit(None, dtype=t).alias(c) for c, t in lineage.items())
            both = pl.concat([rivals.select(came.drop("_g").columns), came.drop("_g")])
            new.append(newest_versions(both, spec).select(list(schema)))
        rows += _write_group(lake, [kept, *new], out(g), schema)
    touched = entering.get_column("_key_hash").n_unique() + rescan.len()
    return rows, {"mode": "carried", "from": p_day.isoformat(), "touched_keys": touched,
                  "rescanned_keys": rescan.len()}


def build_current(lake: Lake, ctx: RunContext, policy: Policy, source: str,
                  pass_rows: int = PASS_ROWS) -> dict[str, Any]:
    """Write ``source``'s current versions for the run's date into the attempt folder.

    Carries the newest usable earlier table (see the module docstring), else rebuilds
    from the staged window in passes of about ``pass_rows`` staged rows. The caller
    switches ``table_rel(source, day)`` to the attempt's copy at publish.

    Returns
    -------
    dict
        What was done: ``mode`` (``carried`` or ``rebuilt``), ``from`` (the carried
        table's date), ``touched_keys``, ``rescanned_keys``, ``rows`` and ``seconds``.
    """
    from transforms.pipeline import _resolved_staged_dirs
    from transforms.staging import empty_typed

    t0 = time.perf_counter()
    spec = SOURCES[source]
    key = snapshot_key(policy)
    ws = window_start(ctx.day, policy)
    rel = f"{ctx.work}/{table_rel(source, ctx.day)}"

    def out(g: int) -> str:
        return f"{ctx.work}/{part_rel(source, ctx.day, g)}"

    if lake.path(rel).is_dir():
        shutil.rmtree(lake.path(rel))
    window = _resolved_staged_dirs(lake, ctx, source, ws, ctx.day)
    scan = lake.scan_partitions(window)
    staged_schema = (scan if scan is not None else empty_typed(spec).lazy()).collect_schema()
    columns = _columns(staged_schema)
    schema = {c: staged_schema[c] for c in columns} | {"_key_hash": pl.UInt64(), "_bucket": pl.Int16()}
    info: dict[str, Any] = {}
    carried = _usable_earlier(lake, ctx, source, key) if scan is not None else None
    if scan is None:
        rows = sum(_write_group(lake, [], out(g), schema) for g in range(GROUPS))
        info = {"mode": "rebuilt"}
    elif carried is not None:
        p_day, meta = carried
        rows, info = _carry(lake, ctx, source, p_day, date.fromisoformat(meta["window_start"]), ws, scan,
                            columns, schema, out)
    else:
        total = scan.select(pl.len()).collect(engine="in-memory").item()
        passes = max(1, -(-total // pass_rows))
        # Each pass versions the keys of one hash class and leaves its rows by group in the
        # attempt, so memory holds one pass, then one group, never the whole window.
        for i in range(passes):
            part = scan.with_columns(key_hash(spec))
            if passes > 1:
                part = part.filter(pl.col("_key_hash") % passes == i)
            for g, sub in _by_group(_finish(newest_versions(part.collect(engine="streaming"), spec), columns)).items():
                lake.write_frame(sub, f"{rel}/_passes/group={g}/pass-{i}.parquet", compression="lz4")
        rows = 0
        for g in range(GROUPS):
            files = lake.parquet_files(f"{rel}/_passes/group={g}")
            rows += _write_group(lake, [pl.read_parquet(files)] if files else [], out(g), schema)
        shutil.rmtree(lake.path(f"{rel}/_passes"))
        info = {"mode": "rebuilt", "passes": passes}
    lake.write_json({"key": key, "score_date": ctx.day.isoformat(), "window_start": ws.isoformat(),
                     "staged_attempts": _attempts(lake, ctx, window), "rows": rows,
                     "grain": "one row per key: its newest version among the window's deliveries"},
                    f"{rel}/_table.json")
    return info | {"rows": rows, "seconds": round(time.perf_counter() - t0, 3)}


def window_rows(lake: Lake, ctx: RunContext, policy: Policy, source: str) -> int:
    """Staged rows in ``source``'s window, from the Parquet footers (sizes the worker pool)."""
    import pyarrow.parquet as pq

    from transforms.pipeline import _resolved_staged_dirs

    dirs = _resolved_staged_dirs(lake, ctx, source, window_start(ctx.day, policy), ctx.day)
    return sum(pq.read_metadata(f).num_rows for d in dirs for f in lake.parquet_files(d))


def build_current_job(ctx_json: dict[str, Any], source: str, pass_rows: int) -> dict[str, Any]:
    """:func:`build_current` in a worker process (arguments that pickle small)."""
    from transforms.lake import Lake
    from transforms.parallel import release_memory
    from transforms.pipeline import RunContext, _policy

    ctx = RunContext.from_json(ctx_json)
    try:
        return build_current(Lake(ctx.root), ctx, _policy(ctx), source, pass_rows)
    finally:
        release_memory()


def scan_current(lake: Lake, ctx: RunContext, source: str, buckets: tuple[int, int] | None) -> pl.LazyFrame:
    """The run's current versions of ``source`` (built by :func:`build_current`), optionally one bucket range."""
    files = [lake.path(f"{ctx.work}/{part_rel(source, ctx.day, g)}") for g in range(GROUPS)]
    if not all(f.exists() for f in files):
        from transforms.errors import ReputationError

        raise ReputationError(f"the current-version table of {source} for {ctx.day} is missing from the attempt",
                              hint="rerun the prepare_score task of this run, then its shards")
    if buckets is None:
        return pl.scan_parquet(files).drop("_key_hash", "_bucket")
    lo, hi = buckets
    return (pl.scan_parquet([files[g] for g in groups_for(lo, hi)])
            .filter((pl.col("_bucket") >= lo) & (pl.col("_bucket") < hi))
            .drop("_key_hash", "_bucket"))


def prune_tables(lake: Lake, keep: int = KEEP) -> int:
    """Withdraw and delete all but the newest ``keep`` tables of each source; returns how many went.

    Each night's table is a full copy of the window's current versions, so old ones are
    only disk: a run carries the newest earlier table and a rebuild needs none.
    """
    removed = 0
    for source in WINDOW_SOURCES:
        days = lake.partitions(f"agg/current/{source}", "score_date")
        for d in days[:-keep] if len(days) > keep else []:
            link = lake.path(table_rel(source, d))
            target = link.resolve()
            if link.is_symlink():
                link.unlink()
            shutil.rmtree(target, ignore_errors=True)
            removed += 1
    return removed
