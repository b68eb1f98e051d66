"""Row reasons, duplicates, versions and accounting: the relational half of validation.

Great Expectations (:mod:`transforms.expectations`) judges each row on its own.
The rules here need other rows: registry membership as of the delivery day,
re-delivered duplicates, conflicting re-deliveries and newer versions. Together
they guarantee that every row read is accounted for exactly once::

    read = accepted + quarantined + duplicate + superseded
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import polars as pl

from transforms.schemas import SOURCES, Source
from transforms.staging import spread_lists

if TYPE_CHECKING:
    from transforms.lake import Lake
    from transforms.pipeline import RunContext

ROW_ID = "_row_id"
LINEAGE_ORDER = ["_dt", "_file", "_row_number"]


def describe(code: str) -> str:
    """A sentence for a reason code (quarantine rows carry both)."""
    kind, _, col = code.partition(":")
    limit = next((c.max_chars for s in SOURCES.values() for c in s.columns if c.name == col and c.max_chars), None)
    texts = {
        "missing_value": f"required value {col} is missing",
        "unparseable": f"the value of {col} cannot be read as its type",
        "non_finite": f"{col} is NaN or infinite",
        "out_of_domain": f"{col} is not one of the allowed values",
        "out_of_range": f"{col} is outside its allowed range",
        "invalid_identifier": f"{col} is not 1–64 characters of [A-Za-z0-9_-]",
        "invalid_format": f"{col} has an invalid format",
        "text_too_long": f"{col} is longer than {limit or 10_000:,} characters",
        "cross_field": f"cross-field rule broken: {col}",
        "after_delivery": f"{col} is after the day the file was delivered",
        "future_date": f"{col} is after the day the file was delivered",
        "unknown_merchant": "merchant_id is not in the registry as of the delivery day",
        "conflicting_duplicate": "another row with the same id but different values was delivered",
    }
    return texts.get(kind, code)


def row_reasons(typed: pl.DataFrame, ge_failures: dict[str, list[int]], known: pl.DataFrame | None) -> pl.DataFrame:
    """Attach ``reason_codes`` (sorted, unique) to every typed row.

    Parameters
    ----------
    typed
        Typed rows with ``_row_id`` and ``_parse_errors``.
    ge_failures
        Failing row ids per reason code, from the Great Expectations suite.
    known
        Registry membership: ``merchant_id``, ``first_seen`` (first delivery day), one row per
        merchant. ``None`` for the registry itself.

    Returns
    -------
    pl.DataFrame
        ``typed`` in ``_row_id`` order, with a ``reason_codes`` column added.

    Notes
    -----
    The codes are worked out on the few columns they need and added to ``typed`` as one more
    column, so the wide columns (texts, the delivered row) are never copied. Joining, splitting
    and sorting the whole frame copied them three times: 2.8 GB more memory on a delivery day of
    5 M reviews (issue 3.10). The registry is looked up per row rather than joined, and only
    the flagged rows are joined to the suite's failures.
    """
    if not typed.get_column(ROW_ID).is_sorted():
        typed = typed.sort(ROW_ID)
    pairs = [(rid, code) for code, ids in ge_failures.items() for rid in ids]
    ge = (pl.DataFrame(pairs, schema={ROW_ID: pl.Int64, "_code": pl.String}, orient="row")
          .group_by(ROW_ID).agg(pl.col("_code").alias("_ge")))
    unknown = pl.lit(False)
    if known is not None and "merchant_id" in typed.columns:
        # First delivery day of each row's merchant, looked up per row (null when unregistered).
        first_seen = pl.col("merchant_id").replace_strict(known.get_column("merchant_id"),
                                                          known.get_column("first_seen"), default=None)
        unknown = pl.col("merchant_id").is_not_null() & (first_seen.is_null() | (first_seen > pl.col("_dt")))
    marks = typed.select(unknown.alias("_unknown"), ((pl.col("_parse_errors").list.len() > 0)
                                                    | pl.col(ROW_ID).is_in(ge.get_column(ROW_ID).implode())
                                                    | unknown).alias("_flagged"))
    flagged = marks.get_column("_flagged")
    # Almost every row is clean: the list work runs on the flagged rows only, and their lists are
    # spread over every row (spread_lists).
    codes = (typed.select(ROW_ID, "_parse_errors").with_columns(marks.get_column("_unknown")).filter(flagged)
             .join(ge, on=ROW_ID, how="left", maintain_order="left")
             .select(pl.concat_list(pl.col("_parse_errors"), pl.col("_ge").fill_null(pl.lit([], pl.List(pl.String))),
                                    pl.when(pl.col("_unknown")).then(pl.lit(["unknown_merchant"]))
                                    .otherwise(pl.lit([], pl.List(pl.String))))
                     .alias("_codes")))
    # A value that was present but unreadable is reported once, as unparseable, not also as missing.
    dirty = codes.select(
        pl.col("_codes").list.eval(
            pl.element().filter(~(
                pl.element().str.starts_with("missing_value:")
                & pl.element().str.replace("missing_value:", "unparseable:", literal=True)
                .is_in(pl.element().filter(pl.element().str.starts_with("unparseable:")).implode())
            ))
        ).list.unique().list.sort().alias("reason_codes")).to_series()
    return typed.with_columns(spread_lists(flagged, dirty))


def row_hash(source: Source) -> pl.Expr:
    """Content hash over the contract columns (lineage excluded)."""
    return pl.struct([pl.col(c) for c in source.names]).hash(seed=0x5EED).alias("_row_hash")


@dataclass
class Outcome:
    """The result of versioning one batch of typed rows against earlier deliveries."""

    accepted: pl.DataFrame
    quarantined: pl.DataFrame
    duplicates: pl.DataFrame
    first_seen: pl.DataFrame | None
    all_rows: pl.DataFrame
    #: Key, content hash and lineage of the valid rows that were *not* accepted (duplicates and
    #: conflicting duplicates): with the accepted rows, every valid row of the batch. A later batch
    #: of the same run must see them as earlier deliveries (see :func:`version_columns`).
    unaccepted: pl.DataFrame | None = None

    def day_report(self, day: date) -> dict[str, Any]:
        """Accounting of one delivery day at staging time."""
        if not hasattr(self, "_counts"):
            def per_day(frame: pl.DataFrame) -> dict[date, int]:
                return dict(frame.group_by("_dt").len().iter_rows())

            reasons = (self.quarantined.select("_dt", "reason_codes").explode("reason_codes").drop_nulls()
                       .group_by("_dt", "reason_codes").len().sort("_dt", "reason_codes"))
            by_reason: dict[date, dict[str, int]] = {}
            for d, r, n in reasons.iter_rows():
                by_reason.setdefault(d, {})[r] = int(n)
            self._counts = (per_day(self.all_rows), per_day(self.quarantined), per_day(self.duplicates),
                            per_day(self.accepted), by_reason)
        read, quar, dup, acc, by_reason = self._counts
        return {
            "read": read.get(day, 0),
            "quarantined": quar.get(day, 0),
            "quarantined_by_reason": by_reason.get(day, {}),
            "duplicate": dup.get(day, 0),
            "accepted_at_staging": acc.get(day, 0),
        }


def version_columns(source: Source) -> list[str]:
    """The columns :func:`apply_versions` needs from earlier deliveries: key, content hash, lineage."""
    return [*source.key, "_row_hash", *LINEAGE_ORDER]


#: Rows hashed at a time by :func:`apply_versions`.
HASH_SLICE_ROWS = 500_000
#: Status of a row in :func:`apply_versions` (a code per row: cheaper than text on millions of rows).
_ACCEPTED, _DUPLICATE, _CONFLICT, _INVALID = 0, 1, 2, 3


def apply_versions(typed: pl.DataFrame, reasons: pl.DataFrame, prior: pl.LazyFrame | None,
                   source: Source) -> Outcome:
    """Split rows into accepted, quarantined and duplicate, honouring earlier deliveries.

    * Immutable sources (reviews): the first delivery of an id wins; an identical
      re-delivery is a ``duplicate``; a differing one is quarantined as
      ``conflicting_duplicate``, and if two rows of one id differ on the *same*
      delivery day, all of them are (nothing can tell which is right).
    * Versioned sources: every distinct version is accepted (the newest wins at
      scoring time, older ones count as superseded); an identical re-delivery is a
      ``duplicate``.

    Notes
    -----
    Each row's status is worked out on its key alone, and on the key, hash and lineage of the
    few rows whose key is repeated; each output then takes its rows from ``reasons`` once.
    Filtering the whole frame into valid rows, joining a status to them and sorting the accepted
    ones copied every column three times: on a delivery day of 5 M reviews (issue 3.10) this
    function held 1.7 GB more than it needs.
    """
    del typed  # reasons already carries every typed column
    # The content hash a slice of rows at a time (the same values): over a whole day of 5 M
    # reviews it held 0.46 GB more while it ran.
    rows = reasons.with_columns(pl.concat([reasons.slice(start, HASH_SLICE_ROWS).select(row_hash(source)).to_series()
                                           for start in range(0, max(reasons.height, 1), HASH_SLICE_ROWS)]))
    is_valid = rows.get_column("reason_codes").list.len() == 0
    valid_at = is_valid.arg_true()  # the row of each valid row
    key = list(source.key)
    cols = version_columns(source)
    if prior is not None and source.name != "merchants":
        # Only earlier deliveries of this batch's ids can matter (the registry keeps its full
        # history: first_seen needs it).
        prior = prior.select(cols).filter(keys_in(key, rows.select(key).filter(is_valid).unique()))
    prior_df = (prior.select(cols).collect(engine="in-memory") if prior is not None
                else pl.DataFrame(schema={c: rows.schema[c] for c in cols}))
    # Ids seen once (nearly all) are accepted as they are; the ordered window logic runs on the
    # rows of the rest (earlier deliveries first, then this batch's valid rows). Repeats are found
    # on a 64-bit hash of the group: a collision only sends two rows down the ordered path, which
    # groups by the columns themselves and so accepts them as it would have; a hash table of
    # integers is a fraction of one of 5 M ids.
    group = key if source.versioning == "immutable" else [*key, "_row_hash"]
    group_hash = key_expr(group).hash(seed=0)
    repeated = (pl.concat([prior_df.select(group_hash), rows.select(group_hash).filter(is_valid)], how="vertical")
                .to_series().is_duplicated())
    again = repeated.slice(prior_df.height).arg_true()  # positions among the valid rows
    combined = pl.concat([
        prior_df.filter(repeated.head(prior_df.height)).with_columns(pl.lit(None, pl.UInt32).alias("_v")),
        rows.select(pl.col(cols).gather(valid_at.gather(again))).with_columns(again.alias("_v")),
    ], how="vertical").sort(LINEAGE_ORDER)
    if source.versioning == "immutable":
        combined = combined.with_columns(
            pl.col("_row_hash").first().over(key).alias("_origin_hash"),
            pl.col("_dt").first().over(key).alias("_origin_dt"),
            (pl.int_range(pl.len()).over(key) == 0).alias("_is_first"),
        ).with_columns(
            ((pl.col("_dt") == pl.col("_origin_dt")) & (pl.col("_row_hash") != pl.col("_origin_hash")))
            .any().over(key).alias("_same_day_conflict"))
        conflict = (~pl.col("_is_first") & (pl.col("_row_hash") != pl.col("_origin_hash"))) | (
            pl.col("_same_day_conflict") & (pl.col("_dt") == pl.col("_origin_dt")))
        dup = ~pl.col("_is_first") & (pl.col("_row_hash") == pl.col("_origin_hash")) & ~conflict
        code = pl.when(conflict).then(_CONFLICT).when(dup).then(_DUPLICATE).otherwise(_ACCEPTED)
    else:
        dup = pl.int_range(pl.len()).over([*key, "_row_hash"]) > 0
        code = pl.when(dup).then(_DUPLICATE).otherwise(_ACCEPTED)
    new = combined.select("_v", code.cast(pl.UInt8).alias("_code")).filter(pl.col("_v").is_not_null())
    valid_code = (pl.repeat(_ACCEPTED, valid_at.len(), dtype=pl.UInt8, eager=True)
                  .scatter(new.get_column("_v"), new.get_column("_code")))
    row_code = pl.repeat(_INVALID, rows.height, dtype=pl.UInt8, eager=True).scatter(valid_at, valid_code)
    # Invalid rows first, then conflicts, each in row order.
    conflicted = (row_code == _CONFLICT).arg_true()
    quarantined = rows.select(pl.all().gather(pl.concat([(~is_valid).arg_true(), conflicted])))
    quarantined = quarantined.with_columns(
        pl.when(pl.int_range(pl.len()) >= quarantined.height - conflicted.len())
        .then(pl.lit(["conflicting_duplicate"])).otherwise(pl.col("reason_codes")).alias("reason_codes"))
    quarantined = quarantined.with_columns(
        pl.col("reason_codes").list.eval(pl.element().map_elements(describe, return_dtype=pl.String))
        .alias("reasons"))
    duplicates = rows.filter(row_code == _DUPLICATE)
    keep = [*source.names, *LINEAGE_ORDER, "_row_hash"]
    accepted_at = (row_code == _ACCEPTED).arg_true()
    if not _in_lineage_order(rows):
        # Delivered rows normally arrive in lineage order already (days, files, row numbers).
        accepted_at = (rows.select(pl.col(LINEAGE_ORDER).gather(accepted_at)).with_columns(accepted_at.alias("_i"))
                       .sort(LINEAGE_ORDER).get_column("_i"))
    accepted = rows.select(pl.col(keep).gather(accepted_at))
    first_seen = None
    if source.name == "merchants":
        seen = pl.concat([prior_df.select("merchant_id", "_dt"), accepted.select("merchant_id", "_dt")])
        first_seen = seen.group_by("merchant_id").agg(pl.col("_dt").min().alias("first_seen"))
    unaccepted = rows.select(cols).filter(row_code.is_in([_DUPLICATE, _CONFLICT]))
    return Outcome(accepted=accepted, quarantined=quarantined, duplicates=duplicates, first_seen=first_seen,
                   all_rows=reasons.select("_dt"), unaccepted=unaccepted)


def _in_lineage_order(rows: pl.DataFrame) -> bool:
    """Whether the rows are sorted by :data:`LINEAGE_ORDER` (each row after the one before it)."""
    if rows.height < 2:
        return True
    d, f, n = (pl.col(c) for c in LINEAGE_ORDER)
    after = (d > d.shift()) | ((d == d.shift()) & ((f > f.shift()) | ((f == f.shift()) & (n > n.shift()))))
    return bool(rows.select(after.slice(1).fill_null(False).all()).item())


def version_order(source: Source) -> list[str]:
    """Columns that order versions of one key, oldest first."""
    return ([source.version_column] if source.version_column else []) + LINEAGE_ORDER


def key_expr(key: list[str]) -> pl.Expr:
    """One expression for a key of one or more columns."""
    return pl.col(key[0]) if len(key) == 1 else pl.struct(key)


def keys_in(key: list[str], ids: pl.DataFrame) -> pl.Expr:
    """True where ``key`` is one of ``ids``' rows.

    A filter rather than a semi-join: Polars pushes it into a Parquet scan, so rows of
    other keys are dropped as they are read (a join reads every row first).
    """
    wanted = ids.select(key).to_series() if len(key) == 1 else ids.select(key).to_struct()
    bounds: list[pl.Expr] = []
    # The bounds of each key column too: the Parquet reader skips row groups whose statistics
    # lie outside them, which it cannot do for the list. Ids issued in order (review ids,
    # merchant-days) skip nearly all of the history: the nightly run's versioning scan of the
    # earlier deliveries of L fell from 2.0 to 0.5 s. Rows outside the bounds fail the list anyway.
    # Only for a column without nulls: a struct key with a null part can still be in the list.
    for c in key:
        col = ids.get_column(c)
        if (col.dtype == pl.String or col.dtype.is_temporal() or col.dtype.is_integer()) and \
                col.len() and not col.null_count():
            bounds.append(pl.col(c).is_between(pl.lit(col.min(), col.dtype), pl.lit(col.max(), col.dtype)))
    listed = key_expr(key).is_in(wanted.implode())
    # `bounds & list`, not one all_horizontal of them all: Polars finds the bounds to prune with
    # only in a plain conjunction.
    return pl.all_horizontal(*bounds) & listed if bounds else listed


def current_versions(staged: pl.LazyFrame, source: Source) -> pl.LazyFrame:
    """Keep the newest version of each key (``updated_at``, then delivery order)."""
    return (staged.sort(version_order(source), nulls_last=False, maintain_order=True)
            .unique(subset=list(source.key), keep="last", maintain_order=True))


#: Keys per pass of :func:`superseded_by_day`: its memory grows with the rows of one pass.
SUPERSEDED_PASS_ROWS = 4_000_000


def superseded_by_day(staged: pl.LazyFrame, source: Source) -> pl.DataFrame:
    """Per delivery day, how many staged rows are no longer the current version.

    A day's superseded rows are its rows minus the current versions it delivered, so
    only each key's newest delivery day is needed: a group-by, not a sort of every
    version. History grows every night (at L, 14.5 M staged returns, nearly all of
    them repeated status updates), so the keys are split by hash into passes of about
    :data:`SUPERSEDED_PASS_ROWS` rows; a key's versions all fall in one pass, and the
    passes' counts add up.
    """
    order = version_order(source)
    key = list(source.key)
    rows = staged.select(pl.len()).collect(engine="in-memory").item()
    passes = max(1, -(-rows // SUPERSEDED_PASS_ROWS))
    narrow = staged.select(*key, *order)
    counts = []
    for i in range(passes):
        part = narrow
        if passes > 1:
            part = narrow.filter(key_expr(key).hash(seed=0) % passes == i)
        per_day = part.group_by("_dt").len("rows")
        current = (part.group_by(key).agg(pl.col("_dt").sort_by(order, nulls_last=False).last())
                   .group_by("_dt").len("current"))
        counts.append(per_day.join(current, on="_dt", how="left")
                      .select("_dt", (pl.col("rows") - pl.col("current").fill_null(0)).alias("superseded"))
                      .collect(engine="in-memory"))
    return (pl.concat(counts).group_by("_dt").agg(pl.col("superseded").sum())
            .filter(pl.col("superseded") > 0).sort("_dt"))


def staged_attempt(lake: Lake, ctx: RunContext, rel: str) -> str:
    """The attempt that wrote a staged partition: its identity across runs ("" if unknown).

    A public partition is a symbolic link into the attempt that staged it, so a restaged
    day (a late or corrected delivery) always has a new identity.
    """
    import os
    import re

    if rel.startswith(f"{ctx.work}/"):
        return ctx.attempt_id
    link = lake.path(rel)
    m = re.search(r"_attempts/([^/]+)/", os.readlink(link)) if link.is_symlink() else None
    return m.group(1) if m else ""


def _carried_superseded(lake: Lake, ctx: RunContext, source: str,
                        attempts: dict[date, str]) -> tuple[date, dict[date, int]] | None:
    """The newest earlier manifest's superseded counts, if every day it counted is unchanged.

    Usable only when the staged days up to that date are exactly the ones it counted, each
    still the partition of the same attempt; otherwise ``None`` (count from scratch).
    """
    from transforms.pipeline import manifest_for

    earlier = [d for d in lake.partitions("runs", "score_date") if d < ctx.day]
    for p_day in reversed(earlier):
        m = manifest_for(lake, p_day)
        if not m or m.get("status") not in ("published", "held"):
            continue
        by_day = ((m.get("sources") or {}).get(source) or {}).get("by_delivery_day") or {}
        then = {date.fromisoformat(d): e.get("staged_attempt", "") for d, e in by_day.items()}
        now = {d: a for d, a in attempts.items() if d <= p_day}
        if then != now or "" in then.values():
            return None
        return p_day, {date.fromisoformat(d): int(e["superseded"]) for d, e in by_day.items()}
    return None


def superseded_as_of(lake: Lake, ctx: RunContext, source: str, dirs: list[str],
                     attempts: dict[date, str]) -> dict[date, int]:
    """Superseded rows per delivery day as of the score date, carried from the last run.

    Counting from scratch reads every staged version of the history (at L, 14.5 M returns)
    every night. A key can only change its days' counts if it has a version delivered after
    the last run's date ``P``; every other key counts as it did then. So, when the staged
    days up to ``P`` are unchanged (:func:`_carried_superseded`), the count is ``P``'s
    plus, for the keys delivered after ``P`` only, their count now minus their count as of
    ``P`` — the same numbers, from one day's keys.
    """
    spec = SOURCES[source]
    scan = lake.scan_partitions(dirs)
    if scan is None:
        return {}
    carried = _carried_superseded(lake, ctx, source, attempts)
    if carried is None:
        return dict(superseded_by_day(scan, spec).iter_rows())
    p_day, counts = carried
    new = [d for d in dirs if date.fromisoformat(d.rsplit("dt=", 1)[1]) > p_day]
    new_scan = lake.scan_partitions(new)
    if new_scan is None:
        return counts
    key = list(spec.key)
    # Read once: the history scan is the cost (every staged version's key), and both counts need it.
    touched = (scan.filter(keys_in(key, new_scan.select(key).unique().collect(engine="in-memory")))
               .select(*key, *version_order(spec)).collect(engine="in-memory").lazy())
    out = dict(counts)
    for frame, sign in ((superseded_by_day(touched, spec), 1),
                        (superseded_by_day(touched.filter(pl.col("_dt") <= p_day), spec), -1)):
        for d, n in frame.iter_rows():
            out[d] = out.get(d, 0) + sign * int(n)
    return {d: n for d, n in out.items() if n}


def accounting_as_of(lake: Lake, ctx: RunContext, source: str) -> dict[str, Any]:
    """Read, accepted, quarantined, duplicate and superseded rows per delivery day, as of the score date."""
    from transforms.pipeline import _resolved_staged_dirs

    spec = SOURCES[source]
    dirs = _resolved_staged_dirs(lake, ctx, source, None, ctx.day)
    attempts = {date.fromisoformat(d.rsplit("dt=", 1)[1]): staged_attempt(lake, ctx, d) for d in dirs}
    superseded = superseded_as_of(lake, ctx, source, dirs, attempts) if spec.versioning == "versioned" else {}
    by_day: dict[str, Any] = {}
    totals = {"read": 0, "accepted": 0, "quarantined": 0, "duplicate": 0, "superseded": 0}
    by_reason: dict[str, int] = {}
    for d in dirs:
        rep = lake.read_json(f"{d}/_accounting.json")
        if rep is None:
            continue
        day = date.fromisoformat(d.rsplit("dt=", 1)[1])
        sup = int(superseded.get(day, 0))
        entry = {"read": rep["read"], "accepted": rep["accepted_at_staging"] - sup, "quarantined": rep["quarantined"],
                 "duplicate": rep["duplicate"], "superseded": sup,
                 "quarantined_by_reason": rep["quarantined_by_reason"], "staged_attempt": attempts[day]}
        entry["balanced"] = entry["read"] == (entry["accepted"] + entry["quarantined"] + entry["duplicate"]
                                              + entry["superseded"])
        by_day[day.isoformat()] = entry
        for k in totals:
            totals[k] += entry[k]
        for r, n in rep["quarantined_by_reason"].items():
            by_reason[r] = by_reason.get(r, 0) + n
    totals_balanced = totals["read"] == totals["accepted"] + totals["quarantined"] + totals["duplicate"] + \
        totals["superseded"]
    return {"rows": totals | {"balanced": totals_balanced}, "quarantined_by_reason": by_reason,
            "by_delivery_day": by_day}
