"""Small helpers to build bad landing zones and to check what a run left behind.

Cases are generated in Python (no committed fixture files): a case starts from
``tests.landing.small_marketplace`` and adds or replaces one thing for the score date.
"""

from __future__ import annotations

import io
import json
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from transforms.policy import default_policy_path

SOURCES = ("merchants", "sales", "reviews", "complaints", "returns")


# ----------------------------------------------------------------------------- good rows
def good_row(source: str, d: date, i: int, prefix: str = "X") -> dict[str, Any]:
    """A valid row of ``source`` delivered on ``d`` (unique per ``prefix`` and ``i``)."""
    day = d.isoformat()
    if source == "merchants":
        return {"merchant_id": f"{prefix}M{i}", "name": f"Shop {prefix}{i}", "category": "electronics",
                "registered_on": "2025-01-01", "license_expires_on": "2027-12-31", "status": "active"}
    if source == "sales":
        # Distinct (merchant, date) keys on days before the delivery day: new versions, never duplicates.
        return {"merchant_id": f"M{i % 3}", "date": (d - timedelta(days=30 + i // 3)).isoformat(), "orders": 20,
                "late_shipments": 1, "cancellations": 0}
    if source == "reviews":
        return {"review_id": f"{prefix}R{i}", "merchant_id": f"M{i % 3}", "order_id": f"{prefix}O{i}",
                "reviewer_id": f"{prefix.lower()}user{i}", "rating": 4, "text": "fine",
                "created_at": f"{day}T07:00:00Z", "verified_purchase": True}
    if source == "complaints":
        return {"complaint_id": f"{prefix}C{i}", "merchant_id": f"M{i % 3}", "order_id": f"{prefix}O{i}",
                "complainant_id": f"{prefix.lower()}buyer{i}", "category": "logistics", "channel": "app",
                "opened_at": f"{day}T01:00:00Z", "first_response_at": f"{day}T02:00:00Z", "resolved_at": None,
                "status": "open", "text": "late", "updated_at": f"{day}T02:00:00Z"}
    if source == "returns":
        return {"return_id": f"{prefix}T{i}", "merchant_id": f"M{i % 3}", "order_id": f"{prefix}O{i}",
                "requested_at": f"{day}T01:00:00Z", "reason": "changed_mind", "status": "requested",
                "refund_amount": 12.5, "resolved_at": None, "updated_at": None}
    raise ValueError(source)


def good_rows(source: str, d: date, n: int, prefix: str = "X") -> list[dict[str, Any]]:
    return [good_row(source, d, i, prefix) for i in range(n)]


# ------------------------------------------------------------------------------- writers
def landing_dir(root: Path, source: str, d: date | str) -> Path:
    folder = root / "landing" / source / f"dt={d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_bytes(root: Path, source: str, d: date | str, name: str, data: bytes) -> Path:
    path = landing_dir(root, source, d) / name
    path.write_bytes(data)
    return path


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def csv_text(rows: list[dict[str, Any]], *, header: list[str] | None = None, eol: str = "\r\n") -> str:
    """RFC 4180 CSV of ``rows`` (None as an empty field)."""
    import csv

    cols = header or list(rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator=eol, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in cols})
    return buf.getvalue()


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ------------------------------------------------------------------------------ policies
def policy_copy(folder: Path, name: str = "policy.yaml", **gate: Any) -> Path:
    """A copy of the packaged policy with some ``gate`` keys changed (for skip_file / override runs)."""
    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data["gate"].update(gate)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def gate_setting(key: str, default: Any) -> Any:
    """A gate setting of the packaged policy (the tests follow the policy, not a copy of its numbers)."""
    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    return data["gate"].get(key, default)


# ---------------------------------------------------------------------------- lake checks
def manifest(root: Path, d: date) -> dict[str, Any]:
    return json.loads((root / "runs" / f"score_date={d}" / "manifest.json").read_text(encoding="utf-8"))


def unbalanced(m: dict[str, Any]) -> list[str]:
    """Every place where read != accepted + quarantined + duplicate + superseded (empty when all balance)."""
    problems = []
    for source, entry in m["sources"].items():
        if "accounting_error" in entry:
            problems.append(f"{source}: accounting error {entry['accounting_error']}")
        rows = entry.get("rows")
        if rows is None:
            problems.append(f"{source}: no accounting in the manifest")
            continue
        parts = rows["accepted"] + rows["quarantined"] + rows["duplicate"] + rows["superseded"]
        if rows["read"] != parts or not rows["balanced"]:
            problems.append(f"{source}: totals {rows}")
        for day, e in entry["by_delivery_day"].items():
            if not e["balanced"] or e["read"] != e["accepted"] + e["quarantined"] + e["duplicate"] + e["superseded"]:
                problems.append(f"{source} dt={day}: {e}")
            if min(e["accepted"], e["quarantined"], e["duplicate"], e["superseded"]) < 0:
                problems.append(f"{source} dt={day}: negative count {e}")
    return problems


def staged(root: Path, source: str, d: date) -> pl.DataFrame:
    """Accepted (staged) rows of one source and delivery day, published."""
    return pl.read_parquet(root / "staged" / source / f"dt={d}" / "*.parquet")


def quarantine_rows(root: Path, source: str, d: date, m: dict[str, Any] | None = None) -> pl.DataFrame:
    """Quarantined rows of one source and delivery day: published, or held in the failed attempt."""
    public = root / "quarantine" / source / f"dt={d}"
    if public.exists():
        return pl.read_parquet(public / "*.parquet")
    for rel in ((m or {}).get("outputs") or {}).get("unpublished_quarantine", []):
        if rel.endswith(f"quarantine/{source}/dt={d}"):
            return pl.read_parquet(root / rel / "*.parquet")
    raise FileNotFoundError(f"no quarantine for {source} dt={d}")


def files_containing(root: Path, needle: str, *, skip_top: tuple[str, ...] = ("landing",)) -> list[str]:
    """Files under ``root`` (outside ``skip_top``) whose content holds ``needle``.

    Parquet is decoded (its pages are compressed, so a byte search would miss a value);
    every other file is searched as bytes. Links are not followed (each real file is seen once).
    """
    hits = []
    raw = needle.encode()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts[:1] and rel_dir.parts[0] in skip_top:
            dirnames[:] = []
            continue
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            data = p.read_bytes()
            if raw in data:
                hits.append(str(p.relative_to(root)))
            elif name.endswith(".parquet"):
                text = json.dumps(pq.read_table(p).to_pylist(), default=str, ensure_ascii=False)
                if needle in text:
                    hits.append(str(p.relative_to(root)))
    return hits
