"""Object-store lakes (``s3://bucket/prefix``): sync in, run locally, publish data then manifest.

A run against an object store works on a local mirror of the lake
(``REPUTATION_CACHE_DIR``, by default ``~/.cache/reputation/<hash of the root>``):

1. **pull** — every object of the lake's tables that changed since the mirror last
   saw it (size and modification time) is downloaded; quarantine and the run's
   scratch folders stay remote-only.
2. the ordinary local pipeline runs on the mirror, with its atomic local publish.
3. **push** — every public file that changed is uploaded, objects that no longer
   exist locally (a withdrawn partition) are deleted, and the ``runs/`` folder —
   the manifests — goes **last**. Every partition is one object, overwritten by a
   single PUT, so a reader sees either the old or the new object, and a reader
   that follows ``runs/score_date=D/manifest.json`` sees a whole run.

Credentials come from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``), or from an
Airflow connection exported into it; ``AWS_ENDPOINT_URL`` selects an
S3-compatible server (MinIO, moto, Ceph).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from transforms.errors import ConfigError, LakeError

#: Tables mirrored locally before a run (what computing a date can need).
PULL_TABLES = ("landing", "staged", "agg", "state", "scores", "actions", "held_actions", "runs")
#: Tables pushed after a run, the manifests (``runs``) last.
PUSH_TABLES = ("staged", "agg", "quarantine", "state", "scores", "actions", "held_actions", "shadow", "runs")
INDEX = ".mirror-index.json"


def is_remote(root: str) -> bool:
    """Whether a lake root is an object-store URL."""
    return root.startswith("s3://")


@dataclass(frozen=True)
class ObjectStore:
    """A lake root on S3 (or an S3-compatible server)."""

    uri: str
    fs: pafs.FileSystem
    base: str

    @classmethod
    def open(cls, uri: str) -> ObjectStore:
        """Connect to ``s3://bucket/prefix`` with credentials from the environment.

        Raises
        ------
        ConfigError
            When the URL is not ``s3://bucket[/prefix]`` or the store cannot be reached.
        """
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(f"unsupported lake root {uri!r}", hint="use a local folder or s3://bucket/prefix")
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("REPUTATION_S3_ENDPOINT")
        kwargs: dict[str, object] = {"region": os.environ.get("AWS_REGION", "us-east-1")}
        if endpoint:
            ep = urlparse(endpoint)
            kwargs.update(endpoint_override=ep.netloc or ep.path, scheme=ep.scheme or "https")
        try:
            fs = pafs.S3FileSystem(**kwargs)
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(f"cannot connect to {uri}: {exc}",
                              hint="check AWS_* credentials and AWS_ENDPOINT_URL") from None
        return cls(uri=uri.rstrip("/"), fs=fs, base=f"{parsed.netloc}{parsed.path}".rstrip("/"))

    def listing(self, table: str) -> dict[str, tuple[int, float]]:
        """``rel -> (size, mtime)`` of every object under one table."""
        sel = pafs.FileSelector(f"{self.base}/{table}", recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(sel)
        except (pa.ArrowException, OSError) as exc:
            raise LakeError(f"cannot list {self.uri}/{table}: {exc}",
                            hint="check the bucket exists and the credentials allow listing") from None
        out = {}
        for i in infos:
            if i.type == pafs.FileType.File:
                mtime = i.mtime.timestamp() if i.mtime is not None else 0.0
                out[i.path[len(self.base) + 1:]] = (int(i.size or 0), mtime)
        return out

    def download(self, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        with self.fs.open_input_stream(f"{self.base}/{rel}") as src, tmp.open("wb") as out:
            while chunk := src.read(8 << 20):
                out.write(chunk)
        if dest.is_symlink():
            dest.unlink()
        os.replace(tmp, dest)

    def upload(self, src: Path, rel: str) -> None:
        with src.open("rb") as fh, self.fs.open_output_stream(f"{self.base}/{rel}") as out:
            while chunk := fh.read(8 << 20):
                out.write(chunk)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(f"{self.base}/{rel}")


def mirror_dir(uri: str) -> Path:
    """The local mirror folder of a remote lake root."""
    base = os.environ.get("REPUTATION_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "reputation"
    return root / hashlib.sha256(uri.encode()).hexdigest()[:16]


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _local_files(local: Path, table: str) -> dict[str, Path]:
    """Public files of one local table, following the published partition links."""
    out: dict[str, Path] = {}
    top = local / table
    if not top.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            out[str(full.relative_to(local)).replace(os.sep, "/")] = full
    return out


class Mirror:
    """Keeps a local mirror of a remote lake in step with it (pull before, push after)."""

    def __init__(self, uri: str, local: Path | None = None) -> None:
        self.store = ObjectStore.open(uri)
        self.local = local or mirror_dir(uri)
        self.local.mkdir(parents=True, exist_ok=True)
        data = json.loads((self.local / INDEX).read_text()) if (self.local / INDEX).exists() else {}
        self.remote_seen: dict[str, list[float]] = data.get("remote", {})
        self.pushed: dict[str, str] = data.get("pushed", {})

    def _save(self) -> None:
        (self.local / INDEX).write_text(json.dumps({"remote": self.remote_seen, "pushed": self.pushed}))

    def pull(self, tables: tuple[str, ...] = PULL_TABLES) -> int:
        """Download objects that changed remotely; return how many."""
        n = 0
        for table in tables:
            for rel, (size, mtime) in self.store.listing(table).items():
                if self.remote_seen.get(rel) == [size, mtime] and (self.local / rel).exists():
                    continue
                self.store.download(rel, self.local / rel)
                self.remote_seen[rel] = [size, mtime]
                self.pushed[rel] = _sha1(self.local / rel)
                n += 1
        self._save()
        return n

    def drop_remote(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a finished run's scratch folder)."""
        for rel in self.store.listing(prefix):
            self.store.delete(rel)
            self.remote_seen.pop(rel, None)
            self.pushed.pop(rel, None)
        self._save()

    def push(self, tables: tuple[str, ...] = PUSH_TABLES) -> int:
        """Upload changed public files, delete withdrawn ones, manifests (``runs``) last."""
        n = 0
        ordered = [t for t in tables if t != "runs"] + (["runs"] if "runs" in tables else [])
        for table in ordered:
            local = _local_files(self.local, table)
            for rel, path in sorted(local.items()):
                digest = _sha1(path)
                if self.pushed.get(rel) == digest:
                    continue
                self.store.upload(path, rel)
                self.pushed[rel] = digest
                n += 1
            for rel in [r for r in self.pushed if r.startswith(f"{table}/") and r not in local]:
                self.store.delete(rel)
                self.pushed.pop(rel, None)
                self.remote_seen.pop(rel, None)
                n += 1
        # What we pushed is what the store now holds: refresh so the next pull skips it.
        for table in ordered:
            for rel, meta in self.store.listing(table).items():
                if rel in self.pushed:
                    self.remote_seen[rel] = list(meta)
        self._save()
        return n


@contextlib.contextmanager
def local_root(root: str, *, attempt: str | None = None, publishing: bool = False) -> Iterator[str]:
    """Yield a local lake root for ``root``; for a remote root, sync around the body.

    The mirror is pulled before the body runs and pushed afterwards — also when the
    body fails, so a failed run's manifest reaches the store too.

    Parameters
    ----------
    root
        Local folder or ``s3://`` URL.
    attempt
        A run's attempt id when the body is one step of a multi-task run (Airflow):
        its scratch folder ``_attempts/<id>`` travels through the store so the next
        step can run on another worker.
    publishing
        The body publishes the attempt: afterwards its scratch folder is removed
        from the store instead of pushed (the published partitions carry the data).
    """
    if not is_remote(root):
        yield root
        return
    mirror = Mirror(root)
    scratch = (f"_attempts/{attempt}",) if attempt else ()
    mirror.pull(PULL_TABLES + scratch)
    try:
        yield str(mirror.local)
    finally:
        mirror.push(PUSH_TABLES + (() if publishing else scratch))
        if publishing and attempt:
            mirror.drop_remote(f"_attempts/{attempt}")
