"""The one I/O edge of the pipeline: landing files in, lake tables out.

Everything that touches storage goes through :class:`Lake`. Transforms stay pure
(frames in, frames out) and outputs are written with the explicit Arrow schemas of
:mod:`transforms.schemas`.

Publishing is transactional. A run writes every output into its own attempt folder
``_attempts/<attempt_id>/...``; nothing there is visible to readers. To publish, it
writes a journal listing each partition to switch, then switches the delivery-day
partitions (``staged/``, ``quarantine/``, ``agg/``) one by one with an atomic symlink
replace, and finally the date's own partitions (``scores``, ``state``, ``actions``,
``runs/score_date=D`` with ``manifest.json``) *together*: they are links through the
date's pointer ``_current/score_date=D``, and one atomic rename of that pointer is the
commit point (:meth:`Lake._apply_together`). New links are made outside the table
folders and renamed in, so a table folder only ever holds whole partitions. A run
killed at any moment leaves every date showing either its previous run or its new
run, whole, and the journal lets the next run of that date finish the switch (redo).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import json
import os
import re
import shutil
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.errors import FileRejected, LakeError, RunLocked

LANDING_EXTENSIONS = (".csv.gz", ".jsonl.gz", ".csv", ".jsonl", ".parquet")
_DT_DIR = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
#: Rows per Parquet row group in every file the lake writes (one layout, whichever writer).
ROW_GROUP_ROWS = 64_000


@dataclass(frozen=True)
class LandingFile:
    """A landing file that passed the layout rules."""

    source: str
    dt: date
    rel: str          # path relative to the root, with forward slashes
    fmt: str          # one of LANDING_EXTENSIONS
    size_bytes: int


@dataclass(frozen=True)
class BadPath:
    """A landing path that is not of the contract's form (reported and skipped)."""

    source: str
    rel: str
    rule: str
    message: str


def _ext(name: str) -> str | None:
    return next((e for e in LANDING_EXTENSIONS if name.endswith(e)), None)


class Lake:
    """A lake rooted at a local folder.

    Parameters
    ----------
    root
        Local folder (created when missing). Object-store URLs are rejected with a
        clear message until the object-store backend is configured.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        text = str(root)
        if "://" in text and not text.startswith("file://"):
            from transforms.errors import ConfigError

            raise ConfigError(
                f"object-store root {text!r} must be opened through its local mirror",
                hint="use the `reputation` CLI (it mirrors s3:// roots) or transforms.objectstore.local_root",
            )
        self.root = Path(text.removeprefix("file://")).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ paths
    def path(self, rel: str) -> Path:
        """Absolute path of ``rel``, refusing anything that escapes the root."""
        # normpath, not resolve(): published partitions are links and callers want the public path.
        p = Path(os.path.normpath(self.root / rel))
        if p != self.root and self.root not in p.parents:
            raise LakeError(f"path {rel!r} escapes the lake root {self.root}")
        return p

    def uri(self, rel: str) -> str:
        """A ``file://`` URI for an Airflow Asset or a report link."""
        return self.path(rel).as_uri()

    # ---------------------------------------------------------------- landing
    def _landing_link(self, source: str) -> str | None:
        """The first symbolic link on the way to ``landing/<source>``, if any (it is never followed)."""
        for rel in ("landing", f"landing/{source}"):
            if (self.root / rel).is_symlink():
                return rel
        return None

    def _inside_landing(self, rel: str) -> Path:
        """Absolute path of a landing file, refusing one that resolves outside ``landing/``."""
        p = self.path(rel)
        if not p.resolve().is_relative_to(self.root / "landing"):
            raise FileRejected(rel, "bad_path", "the path leads outside the landing zone (a symbolic link)",
                               hint="deliver real files under landing/; links are never followed")
        return p

    def landing_days(self, source: str) -> list[date]:
        """Delivery days present for a source (well-formed ``dt=`` folders only, never through a link)."""
        base = self.root / "landing" / source
        if self._landing_link(source) or not base.is_dir():
            return []
        days = []
        for entry in base.iterdir():
            m = _DT_DIR.match(entry.name)
            if m and entry.is_dir() and not entry.is_symlink():
                with contextlib.suppress(ValueError):
                    days.append(date.fromisoformat(m.group(1)))
        return sorted(days)

    def list_landing(self, source: str, dt: date) -> tuple[list[LandingFile], list[BadPath]]:
        """Landing files of one source and delivery day, plus the paths that break the layout.

        Links, hidden files, unknown extensions and names outside ``[A-Za-z0-9._-]``
        are reported, never followed: a landing path can never reach outside the root.
        """
        folder = self.root / "landing" / source / f"dt={dt.isoformat()}"
        good: list[LandingFile] = []
        bad: list[BadPath] = []
        if self._landing_link(source) or folder.is_symlink() or not folder.is_dir():
            return good, bad  # a link on the way is reported by stray_landing_paths
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            rel = f"landing/{source}/dt={dt.isoformat()}/{entry.name}"
            if entry.is_symlink():
                bad.append(BadPath(source, rel, "bad_path", "symbolic links are not followed"))
                continue
            if entry.is_dir():
                bad.append(BadPath(source, rel, "bad_path", "unexpected folder inside a dt= partition"))
                continue
            if entry.name.startswith(".") or entry.name.startswith("_"):
                continue  # hidden and marker files (e.g. _SUCCESS) are not data
            ext = _ext(entry.name)
            if ext is None or not _FILE_NAME.match(entry.name):
                bad.append(BadPath(source, rel, "bad_file_name",
                                   f"file name must be <name>.<{'|'.join(e[1:] for e in LANDING_EXTENSIONS)}>"))
                continue
            good.append(LandingFile(source, dt, rel, ext, entry.stat().st_size))
        return good, bad

    def stray_landing_paths(self, source: str) -> list[BadPath]:
        """Entries directly under ``landing/<source>/`` that are not ``dt=YYYY-MM-DD`` folders.

        A link on the way (``landing`` or ``landing/<source>`` itself, or a ``dt=`` folder) is
        reported and never followed, so a landing path cannot reach outside the root.
        """
        link = self._landing_link(source)
        if link is not None:
            return [BadPath(source, link, "bad_path", "symbolic links are not followed: the landing zone must "
                                                      "be real folders under the root")]
        base = self.root / "landing" / source
        if not base.is_dir():
            return []
        out = []
        for entry in sorted(base.iterdir(), key=lambda e: e.name):
            if entry.is_symlink():
                out.append(BadPath(source, f"landing/{source}/{entry.name}", "bad_path",
                                   "symbolic links are not followed"))
                continue
            m = _DT_DIR.match(entry.name)
            ok = bool(m) and entry.is_dir() and not entry.is_symlink()
            if ok:
                try:
                    date.fromisoformat(m.group(1))  # type: ignore[union-attr]
                except ValueError:
                    ok = False
            if not ok and not entry.name.startswith("."):
                out.append(BadPath(source, f"landing/{source}/{entry.name}", "bad_partition",
                                   "partition folders must be named dt=YYYY-MM-DD"))
        return out

    def read_landing_bytes(self, f: LandingFile) -> bytes:
        """Read (and gunzip) a landing file; a broken file raises :class:`FileRejected`."""
        try:
            data = self._inside_landing(f.rel).read_bytes()
        except OSError as exc:
            raise FileRejected(f.rel, "unreadable_file", f"cannot read the file: {exc.strerror}",
                               hint="check the file's permissions and re-deliver it") from None
        if f.fmt.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                raise FileRejected(f.rel, "corrupt_gzip", f"the gzip stream is corrupt or truncated ({exc})",
                                   hint="re-deliver the file from the upstream system") from None
        return data

    def read_landing_parquet(self, f: LandingFile) -> pa.Table:
        """Read a landing Parquet file; a corrupt one raises :class:`FileRejected`."""
        p = self._inside_landing(f.rel)
        try:
            # One file, so no dataset: ``pq.read_table`` sets up a dataset per file (~5 ms each, 2.9 s
            # of M's full recompute) and imports pandas for its metadata (0.4 s in every worker).
            with pq.ParquetFile(p) as pf:
                return pf.read()
        except (pa.ArrowException, OSError, ValueError) as exc:
            # Arrow names the absolute path; the message already names the file (relative to the root).
            why = re.sub(r"^Could not open Parquet input source '[^']*':\s*", "", str(exc)).replace(str(p), f.rel)
            raise FileRejected(f.rel, "corrupt_parquet", f"the Parquet file cannot be read ({why})",
                               hint="re-deliver the file; it may be truncated") from None

    # ----------------------------------------------------------------- tables
    def write_parquet(self, table: pa.Table, rel: str, *, metadata: dict[str, str] | None = None,
                      sort_note: str | None = None, compression: str = "zstd") -> str:
        """Write one Parquet file (zstd unless told, statistics, bounded row groups) at ``rel``."""
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if metadata:
            merged = dict(table.schema.metadata or {})
            merged.update({k.encode(): v.encode() for k, v in metadata.items()})
            table = table.replace_schema_metadata(merged)
        pq.write_table(table, p, compression=compression, row_group_size=ROW_GROUP_ROWS, write_statistics=True)
        return rel

    def write_frame(self, frame: pl.DataFrame, rel: str, *,
                    compression: Literal["zstd", "lz4", "snappy", "uncompressed"] = "zstd",
                    metadata: dict[str, str] | None = None) -> str:
        """Write a Polars frame as one Parquet file at ``rel`` (its schema is the frame's).

        For frames whose schema is fixed upstream: staged partitions and typed rows (by the
        source's contract) and the current-version tables (by the staged partitions). Polars'
        writer compresses columns in parallel and needs no Arrow copy of the data: 1.4 s
        against pyarrow's 3.3 s for the 5.2 M current returns at L. ``metadata`` goes into
        the Arrow schema, as with :meth:`write_parquet`.
        """
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        # The Arrow schema of an empty copy (no data converted) carries the metadata, so readers
        # find it where :meth:`write_parquet` puts it: in the Arrow schema.
        schema = frame.head(0).to_arrow().schema.with_metadata(metadata) if metadata else None
        frame.write_parquet(p, compression=compression, row_group_size=ROW_GROUP_ROWS, statistics=True,
                            arrow_schema=schema)
        return rel

    def sink_frame(self, frame: pl.LazyFrame, rel: str, *,
                   compression: Literal["zstd", "lz4", "snappy", "uncompressed"] = "zstd") -> str:
        """Write a lazy frame as one Parquet file at ``rel`` with Polars' streaming engine, in row order.

        The file is laid out as :meth:`write_frame` lays it out (row groups, statistics); the
        frame's rows are computed and written a batch at a time, never held whole.
        """
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        frame.sink_parquet(p, compression=compression, row_group_size=ROW_GROUP_ROWS, statistics=True,
                           maintain_order=True)
        return rel

    def write_json(self, obj: Any, rel: str) -> str:
        """Write JSON (sorted keys, UTF-8) at ``rel`` atomically."""
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str),
                       encoding="utf-8")
        os.replace(tmp, p)
        return rel

    def write_text(self, text: str, rel: str) -> str:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        return rel

    def read_json(self, rel: str) -> Any:
        try:
            return json.loads(self.path(rel).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def parquet_files(self, rel_dir: str) -> list[str]:
        """Parquet files directly inside a partition folder (following its link)."""
        d = self.path(rel_dir)
        if not d.is_dir():
            return []
        return sorted(str(p) for p in d.glob("*.parquet"))

    def scan_partitions(self, rel_dirs: list[str], schema: dict[str, pl.DataType] | None = None) -> pl.LazyFrame | None:
        """Lazily scan the Parquet files of several partition folders, or ``None`` if there are none."""
        files = [f for d in rel_dirs for f in self.parquet_files(d)]
        if not files:
            return None
        return pl.scan_parquet(files, schema=schema)

    def partitions(self, table: str, key: str) -> list[date]:
        """Dates of the published partitions ``<table>/<key>=YYYY-MM-DD``."""
        base = self.root / table
        if not base.is_dir():
            return []
        out = []
        for entry in base.iterdir():
            m = re.match(rf"^{re.escape(key)}=(\d{{4}}-\d{{2}}-\d{{2}})$", entry.name)
            # An empty folder is not a partition (a date being switched in shows one for a moment).
            if m and entry.is_dir() and any(entry.iterdir()):
                out.append(date.fromisoformat(m.group(1)))
        return sorted(out)

    # ------------------------------------------------------------ transactions
    def attempt_dir(self, attempt_id: str) -> str:
        return f"_attempts/{attempt_id}"

    def commit(self, switches: list[tuple[str, str]], journal_key: str, *,
               together: list[tuple[str, str]] | None = None) -> None:
        """Atomically point each public partition at its new attempt folder.

        Parameters
        ----------
        switches
            ``(public_rel, attempt_rel)`` pairs, applied in order, each atomically on
            its own. An empty ``attempt_rel`` withdraws the public partition.
        journal_key
            Names the journal file, one per date, used to redo an interrupted commit.
        together
            ``(public_rel, attempt_rel)`` pairs that must change as one, applied after
            ``switches``: the date's own partitions (scores, state, actions, the run
            folder), all inside one attempt folder. Readers reach them through the
            date's pointer ``_current/<journal_key>``, so a single atomic rename of
            that pointer switches them all (see :meth:`_apply_together`). Put the run
            folder last. An empty ``attempt_rel`` withdraws the partition.
        """
        journal = f"_journal/{journal_key}.json"
        self.write_json({"switches": switches, "together": together or []}, journal)
        self._apply(switches)
        if together:
            self._apply_together(journal_key, together)
        self.path(journal).unlink()

    def recover(self, journal_key: str) -> bool:
        """Finish an interrupted commit (idempotent). Returns whether there was one."""
        data = self.read_json(f"_journal/{journal_key}.json")
        if data is None:
            return False
        self._apply([(str(a), str(b)) for a, b in data["switches"]])
        together = [(str(a), str(b)) for a, b in data.get("together") or []]
        if together:
            self._apply_together(journal_key, together, retire=[str(r) for r in data.get("retire") or []])
        self.path(f"_journal/{journal_key}.json").unlink()
        return True

    def _apply_together(self, key: str, pairs: list[tuple[str, str]], *, retire: list[str] | None = None) -> None:
        """Switch a date's own partitions with one atomic rename (idempotent, so it can be redone).

        Each public partition is a link through the date's pointer, e.g.
        ``scores/score_date=D -> ../_current/score_date=D/scores`` with
        ``_current/score_date=D -> ../_attempts/<id>``. To switch:

        1. a *shim* folder is made that shows what every partition shows now (links to
           the current folders; an empty folder for a partition the date does not
           have yet), and the pointer is moved to it: readers see no change;
        2. every partition is routed through the pointer: still no change;
        3. the pointer is renamed onto the new attempt folder. This is the commit
           point: every partition of the date changes at once;
        4. withdrawn partitions are unlinked;
        5. the shims and the folders no partition shows any more are removed.

        A crash before 3 leaves the previous outputs, after it the new ones; the
        journal redoes the rest. A partition new to the date shows as an empty
        folder between 2 and 3, which readers (and :meth:`partitions`) treat as absent.
        """
        present = [a for _, a in pairs if a]
        if not present:
            raise LakeError(f"nothing to publish for {key}")
        attempt_rel = "/".join(Path(present[0]).parts[:2])
        attempt = self.path(attempt_rel)
        ptr = self.path(f"_current/{key}")
        entries: list[tuple[Path, str, bool]] = []
        for public_rel, rel in pairs:
            if rel:
                sub = Path(rel).relative_to(attempt_rel).as_posix()
                if "/" in sub or not (attempt / sub).is_dir():
                    raise LakeError(f"cannot publish {public_rel}: {rel} is missing or not a folder of the attempt")
            else:
                sub = "_withdrawn~" + public_rel.replace("/", "~")
                (attempt / sub).mkdir(exist_ok=True)
            entries.append((self.path(public_rel), sub, not rel))
        old_targets = [self.path(r) for r in retire or []]
        if not (ptr.is_symlink() and ptr.resolve() == attempt.resolve()):
            shim = ptr.parent / f".{key}.shim-{uuid.uuid4().hex[:8]}"
            shim.mkdir(parents=True)
            now = ptr.resolve() if ptr.is_symlink() else None
            if now is not None and now.is_dir():  # partitions routed through the pointer keep their folder
                for child in now.iterdir():
                    os.symlink(os.path.relpath(child.resolve(), shim), shim / child.name)
            routed: list[tuple[Path, str]] = []
            for link, sub, withdraw in entries:
                current = self._shown(link)
                if current is None and withdraw:
                    continue  # nothing to withdraw
                entry = shim / sub
                if entry.is_symlink():
                    entry.unlink()
                if current is None:
                    entry.mkdir()  # shows nothing, like the absent partition
                else:
                    old_targets.append(current)
                    os.symlink(os.path.relpath(current, shim), entry)
                routed.append((link, sub))
            self.write_json({"switches": [], "together": pairs,
                             "retire": [str(t.relative_to(self.root)) for t in old_targets]}, f"_journal/{key}.json")
            self._point(ptr, shim)
            for link, sub in routed:
                self._point(link, ptr / sub)
            self._point(ptr, attempt)  # the commit point
        for link, sub, withdraw in entries:
            if not withdraw:
                self._point(link, ptr / sub)  # a no-op unless this is a redo
            elif link.is_symlink():
                link.unlink()
        for shim in ptr.parent.glob(f".{key}.shim-*"):
            shutil.rmtree(shim, ignore_errors=True)
        shown = {t for t in (self._shown(link) for link, _, _ in entries) if t is not None}
        for old in old_targets:
            if old.exists() and old not in shown and old != attempt and attempt not in old.parents:
                shutil.rmtree(old, ignore_errors=True)

    def _shown(self, link: Path) -> Path | None:
        """The real folder a public partition shows now, or ``None`` when it shows nothing."""
        if not link.is_symlink():
            if not link.is_dir():
                return None
            # A real folder from an older layout: move it into the attempts so a link can replace it.
            aside = self.root / "_attempts" / f"_moved-{uuid.uuid4().hex[:8]}" / link.name
            aside.parent.mkdir(parents=True)
            os.rename(link, aside)
            return aside
        target = link.resolve()
        return target if target.is_dir() else None

    def _apply(self, switches: list[tuple[str, str]]) -> None:
        for public_rel, attempt_rel in switches:
            link = self.path(public_rel)
            if not attempt_rel:  # withdraw the partition
                old_target = link.resolve() if link.is_symlink() else None
                if link.is_symlink():
                    link.unlink()
                elif link.exists():
                    shutil.rmtree(link)
                if old_target is not None and old_target.exists():
                    shutil.rmtree(old_target, ignore_errors=True)
                continue
            target = self.path(attempt_rel)
            if not target.exists():
                raise LakeError(f"cannot publish {public_rel}: {attempt_rel} is missing")
            link.parent.mkdir(parents=True, exist_ok=True)
            old = link.resolve() if link.is_symlink() else None
            if link.exists() and not link.is_symlink():
                # A real folder from an older layout: move it aside so the swap stays atomic.
                shutil.rmtree(link)
            self._point(link, target)
            if old is not None and old != target and old.exists():
                shutil.rmtree(old, ignore_errors=True)

    def _point(self, link: Path, target: Path) -> None:
        """Atomically make ``link`` a relative symbolic link to ``target``.

        The new link is made under ``_tmp/`` and renamed over ``link``: only whole
        partitions ever appear inside a table folder (a stray entry there, even for a
        moment, breaks DuckDB's and Polars' Hive scans of the whole table).
        """
        rel = os.path.relpath(target, link.parent)
        if link.is_symlink() and os.readlink(link) == rel:
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "_tmp" / f"{uuid.uuid4().hex}.link"
        tmp.parent.mkdir(exist_ok=True)
        os.symlink(rel, tmp)
        os.replace(tmp, link)

    def sweep_attempts(self, keep: set[str] | None = None, min_age_seconds: float = 3600) -> int:
        """Remove attempt folders no published partition points to (killed or failed runs).

        Only folders older than ``min_age_seconds`` go, so a run still writing is safe.
        """
        base = self.root / "_attempts"
        if not base.is_dir():
            return 0
        removed = 0
        now = time.time()
        for attempt in base.iterdir():
            if keep and attempt.name in keep:
                continue
            if now - attempt.stat().st_mtime < min_age_seconds:
                continue
            if not self._referenced(attempt):
                shutil.rmtree(attempt, ignore_errors=True)
                removed += 1
        return removed

    def _referenced(self, attempt: Path) -> bool:
        for dirpath, dirnames, _ in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            if rel.parts[:1] in (("_attempts",), ("landing",)):
                dirnames[:] = []
                continue
            for d in dirnames:
                full = Path(dirpath) / d
                if full.is_symlink() and attempt in full.resolve().parents:
                    return True
        return False

    # ------------------------------------------------------------------ locks
    @contextlib.contextmanager
    def lock(self, key: str, *, wait_seconds: float = 0.0) -> Iterator[None]:
        """Hold an exclusive lock for ``key`` (one run per date at a time).

        Raises
        ------
        RunLocked
            When another process holds the lock for longer than ``wait_seconds``.
        """
        p = self.path(f"_locks/{key}.lock")
        p.parent.mkdir(parents=True, exist_ok=True)
        fh = p.open("a+")
        deadline = time.monotonic() + wait_seconds
        try:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RunLocked(
                            f"another run of {key} is in progress (lock {p})",
                            hint="wait for it to finish, or pass --wait SECONDS to queue behind it",
                        ) from None
                    time.sleep(0.5)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


def table_from_polars(df: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """Convert a frame to Arrow with exactly ``schema`` (order, types, nullability).

    Raises
    ------
    LakeError
        When a column is missing or cannot be cast: a bug, never silently coerced.
    """
    missing = [f.name for f in schema if f.name not in df.columns]
    if missing:
        raise LakeError(f"output is missing columns {missing} of its schema")
    table = df.select([f.name for f in schema]).to_arrow()
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise LakeError(f"output does not match its schema: {exc}") from None


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    """Rows as JSON Lines (used by tests and tools that write landing data)."""
    buf = io.StringIO()
    for r in rows:
        buf.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    return buf.getvalue()
