"""Run the DAGs for real with `airflow dags test` against a temporary metadata DB and lake.

Each run is a subprocess with its own AIRFLOW_HOME, so this process's Airflow
configuration (if any) never leaks into the runs.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.landing import small_marketplace

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
AIRFLOW = Path(sys.executable).with_name("airflow")


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _airflow_home(tmp_path_factory)


def _airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated metadata DB of its own (Airflow keeps one lake root's scores asset active per DB)."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REPUTATION_"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "REPUTATION_BUSINESS_TIMEZONE": "UTC"})
    proc = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return env


def dags_test(env: dict[str, str], root: Path, dag_id: str, *args: str,
              retries: int | None = None) -> subprocess.CompletedProcess[str]:
    run_env = {**env, "REPUTATION_ROOT": str(root)}
    if retries is not None:  # fail fast instead of waiting out retry delays
        run_env["REPUTATION_AIRFLOW_RETRIES"] = str(retries)
    return subprocess.run([str(AIRFLOW), "dags", "test", dag_id, *args], env=run_env, cwd=root.parent,
                          capture_output=True, text=True, timeout=240, check=False)


def tail(proc: subprocess.CompletedProcess[str]) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-3000:]}"


def task_states(env: dict[str, str], day: date) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute(
            "select ti.task_id, ti.state, ti.try_number from task_instance ti join dag_run dr "
            "on dr.dag_id = ti.dag_id and dr.run_id = ti.run_id "
            "where ti.dag_id = 'merchant_reputation' and dr.logical_date like ?", (f"{day}%",)).fetchall()
    return {task: (state, tries) for task, state, tries in rows}


def manifest(root: Path, day: date) -> dict[str, Any]:
    return json.loads((root / "runs" / f"score_date={day}" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def published(airflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, date]:
    root = tmp_path_factory.mktemp("ok") / "lake"
    day = small_marketplace(root)
    proc = dags_test(airflow_env, root, "merchant_reputation", day.isoformat(), retries=0)
    assert proc.returncode == 0, tail(proc)
    return root, day


def test_manual_run_publishes_its_logical_date(airflow_env, published):
    root, day = published
    assert list((root / "scores" / f"score_date={day}").glob("*.parquet"))
    assert list((root / "actions" / f"score_date={day}").glob("*.parquet"))
    m = manifest(root, day)
    assert (m["status"], m["score_date"], m["exit_code"]) == ("published", day.isoformat(), 0)
    assert {t: s for t, (s, _) in task_states(airflow_env, day).items()} == dict.fromkeys(
        ("ingest", "validate", "score_prepare", "shard_ids", "score_shard", "score_gather", "publish"), "success")
    with sqlite3.connect(Path(airflow_env["AIRFLOW_HOME"]) / "airflow.db") as db:
        events = db.execute("select a.uri, e.extra from asset_event e join asset a on a.id = e.asset_id "
                            "where a.name = 'merchant_scores'").fetchall()
    assert [(uri, json.loads(extra)["score_date"]) for uri, extra in events] == [
        ((root / "scores").as_uri(), day.isoformat())]


@pytest.fixture
def dag_modules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Import the DAG modules in this process (no DB needed), as Airflow's loader would."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))  # if Airflow is not imported yet
    monkeypatch.syspath_prepend(str(DAGS))
    import merchant_enforcement
    import merchant_reputation

    yield merchant_reputation, merchant_enforcement
    for name in ("assets", "merchant_reputation", "merchant_enforcement"):
        sys.modules.pop(name, None)


def test_enforcement_reports_the_published_date(published, dag_modules):
    from airflow.sdk.exceptions import AirflowSkipException

    root, day = published
    _, enforcement = dag_modules
    rows = sum(pq.read_metadata(f).num_rows for f in (root / "actions" / f"score_date={day}").glob("*.parquet"))
    expected = {"score_date": day.isoformat(), "run_id": manifest(root, day)["run_id"], "actions": rows}
    assert enforcement.report(str(root), [day]) == expected            # from the asset event
    assert enforcement.report(str(root), []) == expected               # manual run: newest date
    with pytest.raises(AirflowSkipException, match="no manifest"):
        enforcement.report(str(root), [day - timedelta(days=1), day + timedelta(days=1)])


def test_broken_landing_file_fails_the_run_without_retry(airflow_env, tmp_path):
    root = tmp_path / "lake"
    day = small_marketplace(root, days=9)  # another logical date than the published run
    data = gzip.compress(b"review_id,merchant_id,reviewer_id,rating,created_at,verified_purchase\r\n"
                         + b"R9,M0,u9,5,2026-03-09T08:00:00Z,true\r\n" * 200)
    (root / "landing" / "reviews" / f"dt={day}" / "late-batch.csv.gz").write_bytes(data[: len(data) // 2])

    # Default retries (2). This root's merchant_scores asset stays inactive in the shared DB (Airflow keeps
    # the first root's URI active), which is harmless only because the run never reaches publish.
    proc = dags_test(airflow_env, root, "merchant_reputation", day.isoformat())

    assert proc.returncode != 0, tail(proc)
    assert not list((root / "scores").glob("score_date=*")), "a rejected date must publish nothing"
    m = manifest(root, day)
    assert m["status"] == "failed"
    assert m["exit_code"] == 3
    assert m["error"]["stage"] == "validate"
    assert m["error"]["file"] == f"landing/reviews/dt={day}/late-batch.csv.gz"
    states = task_states(airflow_env, day)
    assert states["validate"] == ("failed", 1), "a data rejection must not be retried"
    assert states["publish"][0] == "upstream_failed"
    # recorded once, by the task (the failure callback must not record it again)
    assert len(list((root / "runs" / "_failed").rglob("*.json"))) == 1


def test_failure_callback_records_the_stage_and_never_raises(tmp_path, dag_modules):
    """The on_failure_callback path for a non-data error (after retries), without a scheduler."""
    from airflow.sdk.exceptions import AirflowFailException

    from transforms.pipeline import ingest

    root = tmp_path / "lake"
    day = small_marketplace(root, days=3)
    ctx = ingest(day, root=str(root)).to_json()

    class TI:
        task_id = "score_gather"

        def xcom_pull(self, task_ids: str) -> dict[str, Any]:
            assert task_ids == "score_prepare"
            return ctx

    class BrokenTI(TI):
        def xcom_pull(self, task_ids: str) -> dict[str, Any]:
            raise RuntimeError("no API server")

    mr, _ = dag_modules
    mr._record_failed_stage({"ti": TI(), "exception": RuntimeError("disk full")})
    m = manifest(root, day)
    assert (m["status"], m["error"]["stage"], m["error"]["message"]) == ("failed", "score_gather", "disk full")

    recorded = AirflowFailException("input rejected")
    recorded.manifest_recorded = "somewhere"  # type: ignore[attr-defined]
    mr._record_failed_stage({"ti": TI(), "exception": recorded})
    assert len(list((root / "runs" / "_failed").rglob("*.json"))) == 1  # not recorded twice

    mr._record_failed_stage({"ti": BrokenTI(), "exception": RuntimeError("x")})  # must not raise
    mr._record_failed_stage({})  # must not raise

    # a failed date: the enforcement DAG skips it
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="is failed"):
        dag_modules[1].report(str(root), [day])


def test_sources_staged_in_worker_processes_inside_the_tasks(tmp_path_factory, tmp_path):
    """`ingest` and `validate` spawn their worker pool inside Airflow's task processes."""
    import polars as pl

    from transforms.pipeline import run_date
    from transforms.settings import Settings

    root = tmp_path / "pooled"
    earlier = small_marketplace(root, days=5)
    env = {**_airflow_home(tmp_path_factory), "REPUTATION_WORKERS": "2", "REPUTATION_PARALLEL_MIN_BYTES": "0",
           "REPUTATION_PARALLEL_MIN_ROWS": "0"}
    proc = dags_test(env, root, "merchant_reputation", earlier.isoformat(), retries=0)
    assert proc.returncode == 0, tail(proc)
    # The same date run in one process on a fresh lake with the same landing files.
    fresh = tmp_path / "lake"
    shutil.copytree(root / "landing", fresh / "landing")
    assert run_date(earlier, Settings(root=str(fresh), workers=1)).exit_code == 0

    def scores(r: Path) -> pl.DataFrame:
        return pl.read_parquet(r / "scores" / f"score_date={earlier}").sort("merchant_id")

    assert scores(root).equals(scores(fresh))
    assert manifest(root, earlier)["run_id"] == manifest(fresh, earlier)["run_id"]
