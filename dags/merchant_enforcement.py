"""
# merchant_enforcement — report the enforcement actions of a newly published date

Scheduled on the **merchant_scores** asset: it runs after
`merchant_reputation.publish` commits a date.

What it does today (one task, `report_actions`), and nothing more:

1. Picks the date: the newest `score_date` in the triggering asset events'
   `extra`; when there is none (a manual run), the newest date under
   `runs/`. Older dates in the same batch of events are logged, not processed.
2. Loads that date's manifest (`transforms.pipeline.manifest_for`).
3. **Skips** (logs why) when there is no manifest or its status is not
   `published` — a failed run, or actions held for human review.
4. Otherwise logs how many action rows `actions/score_date=D/` holds and
   returns `{score_date, run_id, actions}`.

It does **not** yet send the actions anywhere: the enforcement system reads
`actions/score_date=D/` itself (see the data contract).
"""

from __future__ import annotations

import logging
from datetime import date
from inspect import cleandoc
from typing import Any

from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from assets import MERCHANT_SCORES, lake_root

log = logging.getLogger("reputation.airflow")


def report(root: str, triggered: list[date]) -> dict[str, Any]:
    """What ``report_actions`` does, given the lake root and the dates of the triggering events.

    Raises
    ------
    AirflowSkipException
        When there is nothing to enforce: no run, or the run failed or is held.
    """
    from transforms.lake import Lake
    from transforms.pipeline import manifest_for

    lake = Lake(root)
    days = sorted(set(triggered))
    if days:
        day = days[-1]
        if days[:-1]:
            log.info("older published dates in this batch, not processed here: %s",
                     ", ".join(d.isoformat() for d in days[:-1]))
    else:
        recorded = lake.partitions("runs", "score_date")
        if not recorded:
            raise AirflowSkipException(f"no run recorded under {lake.root}/runs")
        day = recorded[-1]
    manifest = manifest_for(lake, day)
    if manifest is None:
        raise AirflowSkipException(f"no manifest for {day}")
    if manifest.get("status") != "published":
        raise AirflowSkipException(f"{day}: run {manifest.get('run_id')} is {manifest.get('status')}; "
                                   "no actions to enforce")
    import pyarrow.parquet as pq

    files = lake.parquet_files(f"actions/score_date={day.isoformat()}")
    n = sum(pq.read_metadata(f).num_rows for f in files)
    log.info("%s: %d enforcement action(s) in actions/score_date=%s (run %s)", day, n, day, manifest.get("run_id"))
    return {"score_date": day.isoformat(), "run_id": manifest.get("run_id"), "actions": n}


@dag(
    dag_id="merchant_enforcement",
    schedule=[MERCHANT_SCORES],
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "data-eng", "retries": 1},
    tags=["merchant-reputation", "enforcement"],
    doc_md=__doc__,
)
def merchant_enforcement() -> None:
    @task(doc_md=cleandoc("""
    **report_actions**: load the manifest of the published date (from the asset
    event, else the newest run) and log its number of enforcement actions; skip
    when the run failed or its actions are held.
    """))
    def report_actions() -> dict[str, Any]:
        events = get_current_context().get("triggering_asset_events") or {}
        triggered = [date.fromisoformat(str(e.extra["score_date"]))
                     for e in events.get(MERCHANT_SCORES, []) if (e.extra or {}).get("score_date")]
        return report(lake_root(), triggered)

    report_actions()


merchant_enforcement()
