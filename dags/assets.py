"""Assets shared by the merchant-reputation DAGs (pure: stdlib + ``airflow.sdk`` only).

The lake root is read from ``REPUTATION_ROOT`` at parse time, exactly as the
pipeline's settings read it, except that a *relative* root (the default is
``data/lake``) is anchored at the repository rather than at the worker's working
directory, which Airflow does not fix. The DAGs pass this root to the pipeline, so
the asset URI and the files the tasks write always agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from airflow.sdk import Asset

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = "data/lake"


def lake_root(environ: Mapping[str, str] | None = None) -> str:
    """The lake root the DAGs run against: ``REPUTATION_ROOT`` or ``<repo>/data/lake``."""
    env = os.environ if environ is None else environ
    raw = env.get("REPUTATION_ROOT") or DEFAULT_ROOT
    if raw.startswith("file://"):
        raw = raw.removeprefix("file://")
    elif "://" in raw:  # object-store URL: passed through untouched
        return raw.rstrip("/")
    path = Path(raw).expanduser()
    return str(path if path.is_absolute() else REPO / path)


def scores_uri(root: str) -> str:
    """URI of the published scores table (``<root>/scores``)."""
    if "://" in root:
        return f"{root.rstrip('/')}/scores"
    return (Path(root) / "scores").as_uri()


#: Updated by ``merchant_reputation.publish`` whenever a date's scores are committed;
#: the event's ``extra`` carries ``score_date``, ``status`` and ``run_id``.
MERCHANT_SCORES = Asset(name="merchant_scores", uri=scores_uri(lake_root()))
