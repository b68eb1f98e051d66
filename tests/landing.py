"""Tiny landing-zone builder for tests: write rows for one source and day in any format."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl


def write_rows(root: Path, source: str, dt: date | str, rows: list[dict[str, Any]], *, fmt: str = "csv",
               name: str = "part-1", encoding: str = "utf-8", bom: bool = False) -> Path:
    """Write ``rows`` as ``landing/<source>/dt=<dt>/<name>.<fmt>`` and return the path."""
    folder = root / "landing" / source / f"dt={dt}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    if fmt.startswith("csv"):
        cols = list(rows[0]) if rows else []
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\r\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
        data = (("\ufeff" if bom else "") + buf.getvalue()).encode(encoding)
    elif fmt.startswith("jsonl"):
        data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows).encode(encoding)
    elif fmt == "parquet":
        pl.DataFrame(rows).write_parquet(path)
        return path
    else:
        raise ValueError(fmt)
    if fmt.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


START = date(2026, 3, 1)


def merchant(mid: str, category: str = "electronics", **kw: Any) -> dict[str, Any]:
    row = {"merchant_id": mid, "name": f"Shop {mid}", "category": category, "registered_on": "2025-01-01",
           "license_expires_on": "2027-12-31", "status": "active"}
    row.update(kw)
    return row


def small_marketplace(root: Path, days: int = 10, merchants: int = 3, orders: int = 50) -> date:
    """A clean marketplace: merchants on day 1, daily sales and a few reviews. Returns the last day."""
    write_rows(root, "merchants", START, [merchant(f"M{i}") for i in range(merchants)])
    for k in range(days):
        d = START + timedelta(days=k)
        write_rows(root, "sales", d, [{"merchant_id": f"M{i}", "date": d.isoformat(), "orders": orders,
                                       "late_shipments": 1, "cancellations": 0} for i in range(merchants)])
        write_rows(root, "reviews", d, [{"review_id": f"R{k}-{i}", "merchant_id": f"M{i}", "order_id": f"O{k}-{i}",
                                         "reviewer_id": f"u{k}{i}", "rating": 5 - (i % 3), "text": "good 很好",
                                         "created_at": f"{d.isoformat()}T08:00:00Z", "verified_purchase": True}
                                        for i in range(merchants)], fmt="jsonl")
        write_rows(root, "complaints", d, [{"complaint_id": f"C{k}", "merchant_id": "M0", "order_id": None,
                                            "complainant_id": f"c{k}", "category": "quality", "channel": "app",
                                            "opened_at": f"{d.isoformat()}T09:00:00", "first_response_at":
                                            f"{d.isoformat()}T10:00:00", "resolved_at": None, "status": "open",
                                            "text": "broken", "updated_at": f"{d.isoformat()}T10:00:00"}])
        write_rows(root, "returns", d, [{"return_id": f"T{k}", "merchant_id": "M1", "order_id": f"O{k}-1",
                                         "requested_at": f"{d.isoformat()}T09:00:00+08:00", "reason": "changed_mind",
                                         "status": "requested", "refund_amount": None, "resolved_at": None,
                                         "updated_at": None}], fmt="parquet")
    return START + timedelta(days=days - 1)
