"""DAG integrity (fast, no metadata DB): parsing, structure, schedule, which date a run scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
# Before Airflow is imported: keep its home in the repo's git-ignored folder, not ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(REPO / "airflow_home"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow.dag_processing.dagbag import DagBag  # noqa: E402
from airflow.sdk import CronDataIntervalTimetable  # noqa: E402
from airflow.serialization.encoders import coerce_to_core_timetable  # noqa: E402
from airflow.timetables.base import TimeRestriction  # noqa: E402

EXPECTED_TASKS = {
    "ingest": {"validate"}, "validate": {"score_prepare"},
    "score_prepare": {"shard_ids", "score_shard", "score_gather"}, "shard_ids": {"score_shard"},
    "score_shard": {"score_gather"}, "score_gather": {"publish"}, "publish": set(),
}


@pytest.fixture(scope="module")
def dags_path():
    """The DAG folder on sys.path, as Airflow's bundle loader puts it (for ``import assets``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(DAGS))
        yield
        for name in ("assets", "merchant_reputation", "merchant_enforcement"):
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def bag(dags_path) -> DagBag:
    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def mr(dags_path):
    import merchant_reputation

    return merchant_reputation


def test_dags_import_without_errors(bag):
    assert bag.import_errors == {}
    assert {"merchant_reputation", "merchant_enforcement"} <= set(bag.dag_ids)


def test_reputation_dag_shape(bag):
    dag = bag.dags["merchant_reputation"]
    retries = int(os.environ.get("REPUTATION_AIRFLOW_RETRIES") or 2)  # 2 unless overridden
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == EXPECTED_TASKS
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert {"merchant-reputation", "nightly"} <= set(dag.tags)
    assert "Schedule and which date a run scores" in dag.doc_md
    assert "score_date" in dag.params
    for t in dag.tasks:
        assert t.retries == retries, t.task_id
        assert t.retry_delay <= timedelta(minutes=5), t.task_id
        assert t.doc_md, t.task_id
        assert t.doc_md.strip(), t.task_id
        assert t.on_failure_callback, t.task_id


def test_publish_updates_the_scores_asset(bag):
    from assets import MERCHANT_SCORES

    publish = bag.dags["merchant_reputation"].get_task("publish")
    assert [(a.name, a.uri) for a in publish.outlets] == [("merchant_scores", MERCHANT_SCORES.uri)]
    assert MERCHANT_SCORES.uri.startswith("file:///")
    assert MERCHANT_SCORES.uri.endswith("/scores")
    others = [t for t in bag.dags["merchant_reputation"].tasks if t.task_id != "publish"]
    assert all(not t.outlets for t in others)


def test_enforcement_dag_is_scheduled_on_the_asset(bag):
    dag = bag.dags["merchant_enforcement"]
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["merchant_scores"]
    assert [t.task_id for t in dag.tasks] == ["report_actions"]
    assert dag.doc_md
    assert "merchant_scores" in dag.doc_md
    assert dag.get_task("report_actions").doc_md
    assert dag.max_active_runs == 1
    assert "merchant-reputation" in dag.tags


def test_schedule_is_a_data_interval_at_0200_business_time(bag, mr):
    tt = bag.dags["merchant_reputation"].timetable
    assert isinstance(tt, CronDataIntervalTimetable)  # not "@daily": that is a zero-width interval
    assert tt.expression == "0 2 * * *"
    assert str(tt.timezone) == mr.BUSINESS_TZ == (os.environ.get("REPUTATION_BUSINESS_TIMEZONE") or "UTC")


def _scheduled_runs(tz: str, after: datetime, n: int):
    """The scheduler's own code path: successive ``next_dagrun_info`` calls."""
    tt = coerce_to_core_timetable(CronDataIntervalTimetable("0 2 * * *", timezone=tz))
    last = None
    for _ in range(n):
        info = tt.next_dagrun_info(last_automated_data_interval=last,
                                   restriction=TimeRestriction(earliest=after, latest=None, catchup=True))
        assert info is not None
        yield info
        last = info.data_interval


@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai", "America/Los_Angeles", "Europe/Berlin"])
def test_scheduled_run_scores_the_previous_business_day(mr, tz):
    zone = ZoneInfo(tz)
    # 2026-03-08 (US) and 2026-03-29 (EU) are DST switches: the rule must hold across them.
    for info in _scheduled_runs(tz, datetime(2026, 3, 5, tzinfo=UTC), 28):
        fires = info.run_after.astimezone(zone)
        assert fires.hour in (2, 3)  # 03:00 only when 02:00 does not exist that night
        day = mr.score_date_for(run_type="scheduled", logical_date=info.data_interval.start,
                                data_interval_start=info.data_interval.start, run_after=info.run_after, tz=tz)
        assert day == fires.date() - timedelta(days=1), (tz, info)


def test_scheduled_run_example_shanghai(mr):
    info = next(_scheduled_runs("Asia/Shanghai", datetime(2026, 3, 9, 12, tzinfo=UTC), 1))
    # fires 2026-03-11 02:00 CST (2026-03-10 18:00Z) and scores 2026-03-10, although ds is 2026-03-09
    assert info.run_after == datetime(2026, 3, 10, 18, tzinfo=UTC)
    day = mr.score_date_for(run_type="scheduled", logical_date=info.data_interval.start,
                            data_interval_start=info.data_interval.start, tz="Asia/Shanghai")
    assert day == date(2026, 3, 10)
    assert info.data_interval.start.astimezone(UTC).date() == date(2026, 3, 9)


def test_backfill_runs_follow_the_scheduled_rule(mr):
    start = datetime(2026, 3, 9, 18, tzinfo=UTC)
    assert mr.score_date_for(run_type="backfill", logical_date=start, data_interval_start=start,
                             tz="Asia/Shanghai") == date(2026, 3, 10)


@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai", "America/Los_Angeles", "Pacific/Kiritimati"])
def test_manual_run_scores_its_logical_date(mr, tz):
    """`airflow dags test merchant_reputation 2026-02-28` (parsed as midnight UTC) scores 2026-02-28."""
    logical = datetime(2026, 2, 28, tzinfo=UTC)
    tt = coerce_to_core_timetable(CronDataIntervalTimetable("0 2 * * *", timezone=tz))
    interval = tt.infer_manual_data_interval(run_after=logical)  # what dag.test() gives the run
    day = mr.score_date_for(run_type="manual", logical_date=logical, data_interval_start=interval.start,
                            run_after=datetime(2026, 11, 28, 17, tzinfo=UTC), tz=tz)
    assert day == date(2026, 2, 28)
    assert interval.start.astimezone(ZoneInfo(tz)).date() < day  # the interval would be the wrong day


def test_manual_run_without_logical_date_scores_the_previous_business_day(mr):
    run_after = datetime(2026, 3, 10, 17, tzinfo=UTC)  # 2026-03-11 01:00 in Shanghai
    assert mr.score_date_for(run_type="manual", logical_date=None, data_interval_start=None,
                             run_after=run_after, tz="Asia/Shanghai") == date(2026, 3, 10)
    assert mr.score_date_for(run_type="manual", logical_date=None, data_interval_start=None,
                             run_after=run_after, tz="UTC") == date(2026, 3, 9)


@pytest.mark.parametrize("run_type", ["manual", "scheduled"])
def test_score_date_param_overrides(mr, run_type):
    t = datetime(2026, 3, 10, 2, tzinfo=UTC)
    assert mr.score_date_for(run_type=run_type, logical_date=t, data_interval_start=t, tz="UTC",
                             requested="2026-01-15") == date(2026, 1, 15)


def test_lake_root_and_asset_uri(dags_path):
    import assets

    assert assets.lake_root({}) == str(REPO / "data" / "lake")
    assert assets.lake_root({"REPUTATION_ROOT": "rel/lake"}) == str(REPO / "rel" / "lake")
    assert assets.lake_root({"REPUTATION_ROOT": "/srv/lake"}) == "/srv/lake"
    assert assets.lake_root({"REPUTATION_ROOT": "file:///srv/lake"}) == "/srv/lake"
    assert assets.lake_root({"REPUTATION_ROOT": "s3://b/p/"}) == "s3://b/p"
    assert assets.scores_uri("/srv/lake") == "file:///srv/lake/scores"
    assert assets.scores_uri("s3://b/p") == "s3://b/p/scores"


PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import merchant_reputation, merchant_enforcement
heavy = sorted(m for m in ("polars", "great_expectations", "transforms", "pandas") if m in sys.modules)
print(json.dumps({"heavy": heavy, "tz": str(merchant_reputation.SCHEDULE.timezone),
                  "uri": merchant_reputation.MERCHANT_SCORES.uri}))
"""


def test_dag_files_import_no_heavy_libraries_and_read_settings_at_parse_time(tmp_path):
    env = {**os.environ, "REPUTATION_BUSINESS_TIMEZONE": "Asia/Shanghai",
           "REPUTATION_ROOT": str(tmp_path / "lake")}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(DAGS)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    assert out["tz"] == "Asia/Shanghai"
    assert out["uri"] == (tmp_path / "lake" / "scores").as_uri()


def test_unknown_business_timezone_is_an_import_error():
    env = {**os.environ, "REPUTATION_BUSINESS_TIMEZONE": "Mars/Olympus"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(DAGS)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "Mars/Olympus" in proc.stderr
