"""
# merchant_reputation — nightly merchant credibility scores

Wiring only: every task calls one step of `transforms.pipeline`
(`ingest → validate → score → publish`, the same four functions as
`reputation run`). Heavy libraries (Polars, Great Expectations) are imported
inside the tasks, so parsing this file stays cheap.

## Schedule and which date a run scores

* Fires **daily at 02:00 in the business time zone** (`REPUTATION_BUSINESS_TIMEZONE`,
  default UTC, read when the file is parsed) with
  `CronDataIntervalTimetable("0 2 * * *")`: a run covers the interval
  *[yesterday 02:00, today 02:00)* and starts when it closes.
* **Scheduled (and backfill) runs** score the business day of
  `data_interval_start`, i.e. the **previous business day** (the run firing on
  2026-03-11 02:00 scores 2026-03-10). `ds` / `logical_date` are not used: they
  are UTC and would be a day off east of UTC.
* **Manual runs** score the **calendar date of the logical date** as Airflow
  parsed it (UTC, Airflow's `default_timezone`):
  `airflow dags test merchant_reputation 2026-02-28` scores **2026-02-28**, in
  every business time zone. Manual runs without a logical date score the
  previous business day.
* The `score_date` param (`YYYY-MM-DD`), e.g.
  `airflow dags trigger merchant_reputation -c '{"score_date": "2026-02-28"}'`,
  overrides both rules. Use it when triggering from the UI.

## Failures

* Tasks retry twice, a minute apart, on errors (a locked date, a storage
  hiccup, a bug); `REPUTATION_AIRFLOW_RETRIES` (read at parse time) changes the count.
* **A data rejection (`InputRejected`: a bad file or a tripped gate) is never
  retried**: the task writes the failed manifest
  (`runs/score_date=D/manifest.json`, unless the date is already published)
  and fails at once. Fix or re-deliver the data, then clear the run.
* When a task fails for any other reason after its retries, its
  `on_failure_callback` records the failed stage in the manifest (best effort).
* Nothing is visible to readers until `publish` commits; a failed run leaves
  every published date untouched.

## Outputs

`publish` updates the asset **merchant_scores** (`<root>/scores`), which
schedules `merchant_enforcement`. The lake root is `REPUTATION_ROOT` (default
`data/lake` in the repository).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from inspect import cleandoc
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException
from assets import MERCHANT_SCORES, lake_root

log = logging.getLogger("reputation.airflow")

#: Parse-time settings (cheap: environment only).
BUSINESS_TZ = os.environ.get("REPUTATION_BUSINESS_TIMEZONE") or "UTC"
ZoneInfo(BUSINESS_TZ)  # an unknown zone is an import error naming the zone, not a silent UTC
SCHEDULE = CronDataIntervalTimetable("0 2 * * *", timezone=BUSINESS_TZ)
#: Retries of a task on errors other than a data rejection (tests set 0 to fail fast).
RETRIES = int(os.environ.get("REPUTATION_AIRFLOW_RETRIES") or 2)
#: How long a task waits for another run of the same date (e.g. a CLI run) before failing.
LOCK_WAIT_SECONDS = 60.0
#: The task whose return value is the context a failed task started from.
UPSTREAM = {"validate": "ingest", "score_prepare": "validate", "score_shard": "score_prepare",
            "shard_ids": "score_prepare", "score_gather": "score_prepare", "publish": "score_gather"}
SCHEDULED_RUN_TYPES = frozenset({"scheduled", "backfill"})


def score_date_for(*, run_type: str, logical_date: datetime | None,
                   data_interval_start: datetime | None, tz: str,
                   run_after: datetime | None = None, requested: str | None = None) -> date:
    """The business day a run scores (pure; see the DAG's doc for the rules).

    Parameters
    ----------
    run_type
        ``scheduled``, ``backfill``, ``manual``, ... (``DagRunType`` value).
    logical_date, data_interval_start, run_after
        From the run's context; aware datetimes or ``None``.
    tz
        The business time zone (IANA name).
    requested
        The ``score_date`` param, ``YYYY-MM-DD``; overrides everything when set.
    """
    if requested:
        return date.fromisoformat(str(requested))
    zone = ZoneInfo(tz)
    if run_type in SCHEDULED_RUN_TYPES and data_interval_start is not None:
        return data_interval_start.astimezone(zone).date()
    if logical_date is not None:
        return logical_date.astimezone(UTC).date()
    if run_after is None:
        raise ValueError("a run without a logical date needs run_after to pick a score date")
    return run_after.astimezone(zone).date() - timedelta(days=1)


# ------------------------------------------------------------------ task plumbing
def _quiet_libraries() -> None:
    # Before Great Expectations is imported: it logs ~200 INFO lines at import.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def _run_stage(stage: str, ctx_json: dict[str, Any], step: Callable[[Any], Any]) -> Any:
    """Run one pipeline step under the date's lock; a data rejection fails without retry."""
    _quiet_libraries()
    from transforms.errors import ConfigError, InputRejected
    from transforms.lake import Lake
    from transforms.objectstore import local_root
    from transforms.pipeline import RunContext, record_failure

    ctx = RunContext.from_json(ctx_json)
    remote = ctx.notes.get("remote_root")
    with local_root(remote or ctx.root, attempt=ctx.attempt_id, publishing=stage == "publish") as local, \
            Lake(local).lock(f"score_date={ctx.score_date}", wait_seconds=LOCK_WAIT_SECONDS):
        ctx.root = local  # an object-store run works on this worker's mirror
        try:
            return step(ctx)
        except InputRejected as exc:
            path = record_failure(ctx, exc, stage=stage)
            log.error("%s rejected the input of %s: %s (manifest: %s)", stage, ctx.score_date, exc, path)
            err = AirflowFailException(
                f"input rejected for {ctx.score_date} at {stage} (not retried): {exc.message}; "
                f"manifest {path}. Fix or re-deliver the data, then clear this run.")
            err.manifest_recorded = path  # type: ignore[attr-defined]  # read by _record_failed_stage
            raise err from exc
        except ConfigError as exc:  # settings / policy: retrying cannot help
            raise AirflowFailException(f"configuration error at {stage}: {exc}") from exc


def _record_failed_stage(context: Any) -> None:
    """``on_failure_callback``: record the failed stage in the manifest. Never raises."""
    try:
        exc = context.get("exception")
        if getattr(exc, "manifest_recorded", None):
            return  # a data rejection, already recorded by the task itself
        ti = context["ti"]
        stage = ti.task_id
        upstream = UPSTREAM.get(stage)
        data = ti.xcom_pull(task_ids=upstream) if upstream else None
        if not data:
            log.warning("%s failed before a run context existed; no manifest to record", stage)
            return
        from transforms.pipeline import RunContext, record_failure

        ctx = RunContext.from_json(data)
        cause = exc if isinstance(exc, BaseException) else RuntimeError(f"task {stage} failed")
        path = record_failure(ctx, cause, stage=stage)
        log.error("recorded the failure of %s for %s in %s", stage, ctx.score_date, path)
    except Exception:  # best effort: a callback must never mask the task's own failure
        log.exception("could not record the failed stage in the manifest")


TASK_DEFAULTS: dict[str, Any] = {
    "owner": "data-eng",
    "retries": RETRIES,
    "retry_delay": timedelta(minutes=1),
    "execution_timeout": timedelta(hours=2),
    "on_failure_callback": _record_failed_stage,
}


@dag(
    dag_id="merchant_reputation",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=ZoneInfo(BUSINESS_TZ)),
    catchup=False,
    max_active_runs=1,
    default_args=TASK_DEFAULTS,
    tags=["merchant-reputation", "nightly", "scores"],
    doc_md=__doc__,
    params={
        "score_date": Param(
            None, type=["null", "string"], format="date", title="Score date",
            description="Business day to score (YYYY-MM-DD). Empty: scheduled runs score the "
                        "previous business day, manual runs the logical date's calendar date."),
    },
)
def merchant_reputation() -> None:
    @task(doc_md=cleandoc("""
    **ingest**: pick the score date (see the DAG doc), then read and type every
    landing file the date needs into a fresh attempt folder. Returns the run
    context (small JSON) for `validate`. Unreadable files are only *reported*
    here; `validate` decides.
    """))
    def ingest() -> dict[str, Any]:
        context = get_current_context()
        dag_run = context["dag_run"]
        run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
        day = score_date_for(run_type=str(run_type), logical_date=context.get("logical_date"),
                             data_interval_start=context.get("data_interval_start"),
                             run_after=getattr(dag_run, "run_after", None), tz=BUSINESS_TZ,
                             requested=context["params"].get("score_date"))
        log.info("%s run %s scores %s (business time zone %s)", run_type, dag_run.run_id, day, BUSINESS_TZ)
        _quiet_libraries()
        from transforms import pipeline
        from transforms.errors import ConfigError
        from transforms.lake import Lake
        from transforms.objectstore import is_remote, local_root

        root = lake_root()
        attempt = uuid.uuid4().hex[:12]
        try:
            with local_root(root, attempt=attempt) as local, \
                    Lake(local).lock(f"score_date={day.isoformat()}", wait_seconds=LOCK_WAIT_SECONDS):
                ctx = pipeline.ingest(day, root=local, attempt_id=attempt)
                if is_remote(root):
                    ctx.notes["remote_root"] = root
                return ctx.to_json()
        except ConfigError as exc:
            raise AirflowFailException(f"configuration error at ingest: {exc}") from exc

    @task(doc_md=cleandoc("""
    **validate**: run the Great Expectations suites, quarantine bad rows and
    apply the fail-closed gate. A rejected batch (bad file, tripped gate) writes
    the failed manifest and fails the run **without retry**.
    """))
    def validate(ctx: dict[str, Any]) -> dict[str, Any]:
        from transforms import pipeline

        return _run_stage("validate", ctx, lambda c: pipeline.validate(c).to_json())

    @task(doc_md=cleandoc("""
    **score_prepare**: build what every shard shares (the new day's review
    aggregates) and read the shard count from the policy.
    """))
    def score_prepare(ctx: dict[str, Any]) -> dict[str, Any]:
        from transforms import pipeline

        return _run_stage("score_prepare", ctx, lambda c: pipeline.prepare_score(c).to_json())

    @task(doc_md="**shard_ids**: the shard numbers to fan out over (`shards` in the policy).")
    def shard_ids(ctx: dict[str, Any]) -> list[int]:
        return list(range(int(ctx["notes"]["shards"])))

    @task(map_index_template="shard {{ task.op_kwargs['shard'] }}", doc_md=cleandoc("""
    **score_shard** (dynamically mapped, one task per shard): per-merchant evidence
    for the shard's merchants. Shards are independent and write only their own
    evidence file, so they run on as many workers as the deployment has; they do
    not take the date lock (the run already holds its attempt folder alone).
    """))
    def score_shard(ctx: dict[str, Any], shard: int) -> int:
        _quiet_libraries()
        from transforms import pipeline
        from transforms.objectstore import local_root

        run = pipeline.RunContext.from_json(ctx)
        with local_root(run.notes.get("remote_root") or run.root, attempt=run.attempt_id) as local:
            run.root = local
            pipeline.score_shard(run, shard)
        return shard

    @task(doc_md=cleandoc("""
    **score_gather**: the steps that need all merchants — category norms and
    percentiles, tiers, reasons, enforcement and the blast-radius guard — into
    the attempt folder (not yet visible to readers).
    """))
    def score_gather(ctx: dict[str, Any], done: list[int]) -> dict[str, Any]:
        from transforms import pipeline

        log.info("gathering %d shard(s)", len(list(done)))
        return _run_stage("score_gather", ctx, lambda c: pipeline.gather_scores(c).to_json())

    @task(outlets=[MERCHANT_SCORES], doc_md=cleandoc("""
    **publish**: check the scores with their suite, write the manifest and commit
    the date's outputs atomically, then update the `merchant_scores` asset
    (event extra: `score_date`, `status`, `run_id`).
    """))
    def publish(ctx: dict[str, Any]) -> dict[str, Any]:
        from transforms import pipeline

        result = _run_stage("publish", ctx, pipeline.publish)
        out = {"score_date": result.score_date.isoformat(), "status": result.status,
               "exit_code": result.exit_code, "run_id": result.run_id,
               "manifest_path": result.manifest_path, "message": result.message}
        if result.status == "held":
            log.warning("scores published, enforcement actions held for review: %s", result.message)
        log.info("%s %s run %s: %s (manifest %s)", result.status, out["score_date"], result.run_id,
                 result.message, result.manifest_path)
        get_current_context()["outlet_events"][MERCHANT_SCORES].extra = {
            k: out[k] for k in ("score_date", "status", "run_id")}
        return out

    prepared = score_prepare(validate(ingest()))
    shards = score_shard.partial(ctx=prepared).expand(shard=shard_ids(prepared))
    publish(score_gather(prepared, shards))


merchant_reputation()
