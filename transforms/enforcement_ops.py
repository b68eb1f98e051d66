"""Operator commands around enforcement: release held actions, and shadow-run a candidate policy.

``reputation release --date D`` publishes the actions the blast-radius guard held on
``D`` (``held_actions/score_date=D`` → ``actions/score_date=D``) after a person has
reviewed them, and advances the enforcement state of ``D`` to what it would have been
without the hold. The switch is one transactional commit, like a run's publish.

``reputation shadow --date D --policy CANDIDATE.yaml`` scores ``D`` with a candidate
policy from the already staged inputs, runs enforcement against the live state, and
writes scores, would-be actions and a diff against the published scores to
``shadow/<candidate version>/score_date=D/``. It never touches scores/, actions/ or
the enforcement state.
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from transforms.errors import ConfigError, NotFound, ReputationError
from transforms.lake import Lake, table_from_polars
from transforms.schemas import ACTIONS_SCHEMA, ENFORCEMENT_STATE_SCHEMA, SCORES_SCHEMA
from transforms.settings import Settings


@dataclass
class ReleaseResult:
    """What ``reputation release`` did."""

    score_date: date
    actions: int
    manifest_path: str
    later_dates: list[date] = field(default_factory=list)


def _read(lake: Lake, rel_dir: str) -> tuple[pl.DataFrame, dict[str, str]]:
    files = lake.parquet_files(rel_dir)
    if not files:
        raise NotFound(f"{rel_dir} has no data")
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(files[0]).metadata or {}).items()
            if not k.startswith(b"ARROW")}
    return pl.read_parquet(files), meta


def release_date(settings: Settings, day: date) -> ReleaseResult:
    """Publish the held enforcement actions of ``day`` and advance its enforcement state.

    Raises
    ------
    NotFound
        When ``day`` has no run, or its actions are not held.
    """
    from transforms.pipeline import manifest_for

    lake = Lake(settings.root)
    d = day.isoformat()
    with lake.lock(f"score_date={d}"):
        lake.recover(f"score_date={d}")
        manifest = manifest_for(lake, day)
        if manifest is None:
            raise NotFound(f"no run recorded for {d}", hint=f"run `reputation run --date {d}` first")
        if manifest.get("status") != "held":
            detail = " (already released)" if manifest.get("released") else ""
            raise NotFound(f"the enforcement actions of {d} are not held: the run's status is "
                           f"{manifest.get('status')!r}{detail}", hint="only a date whose run ended with exit code 4 "
                           "(status held) can be released")
        actions, a_meta = _read(lake, f"held_actions/score_date={d}")
        state, s_meta = _read(lake, f"state/enforcement_held/score_date={d}")
        scores, c_meta = _read(lake, f"scores/score_date={d}")
        work = f"_attempts/release-{uuid.uuid4().hex[:12]}"
        lake.write_parquet(table_from_polars(actions, ACTIONS_SCHEMA), f"{work}/actions/part-0.parquet",
                           metadata=a_meta | {"released": "true"})
        lake.write_parquet(table_from_polars(state, ENFORCEMENT_STATE_SCHEMA), f"{work}/state/part-0.parquet",
                           metadata=s_meta | {"released": "true"})
        # The published tier is the enforced one: after release it is what automation proposed.
        released = state.select("merchant_id", pl.col("enforced_tier").alias("_enforced"))
        scores = (scores.join(released, on="merchant_id", how="left", maintain_order="left")
                  .with_columns(pl.col("proposed_tier").alias("tier"),
                                pl.col("_enforced").fill_null(pl.col("enforced_tier")).alias("enforced_tier"))
                  .drop("_enforced"))
        lake.write_parquet(table_from_polars(scores, SCORES_SCHEMA), f"{work}/scores/part-0.parquet",
                           metadata=c_meta | {"released": "true"})
        runs_src = lake.path(f"runs/score_date={d}").resolve()
        shutil.copytree(runs_src, lake.path(f"{work}/runs"))
        manifest = dict(manifest)
        manifest.update(status="published", exit_code=0, released=True, held_status="held")
        outputs = dict(manifest.get("outputs") or {})
        outputs.pop("held_actions", None)
        outputs.pop("enforcement_state_if_released", None)
        outputs["actions"] = {"path": f"actions/score_date={d}", "rows": actions.height}
        manifest["outputs"] = outputs
        enforcement = dict(manifest.get("enforcement") or {})
        enforcement.update(released=True, new_penalties=enforcement.get("proposed_new_penalties", 0))
        manifest["enforcement"] = enforcement
        manifest["tier_counts"] = dict(scores.group_by("tier").len().sort("tier").iter_rows())
        lake.write_json(manifest, f"{work}/runs/manifest.json")
        switches = [
            (f"scores/score_date={d}", f"{work}/scores"),
            (f"state/enforcement/score_date={d}", f"{work}/state"),
            (f"state/enforcement_held/score_date={d}", ""),
            (f"held_actions/score_date={d}", ""),
            (f"actions/score_date={d}", f"{work}/actions"),
            (f"runs/score_date={d}", f"{work}/runs"),
        ]
        with lake.lock(f"commit-{d}", wait_seconds=600):
            lake.commit([], f"score_date={d}", together=switches)
        # The copied report still says "held": rebuild it from the released outputs.
        from transforms.report import write_report

        write_report(lake, day)
    later = [x for x in lake.partitions("state/enforcement", "score_date") if x > day]
    return ReleaseResult(day, actions.height, str(lake.path(f"runs/score_date={d}/manifest.json")), later)


# ----------------------------------------------------------------------------- shadow
@dataclass
class ShadowResult:
    """What ``reputation shadow`` wrote and found."""

    score_date: date
    candidate_version: str
    path: str
    summary: dict[str, Any]


def _safe(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", version) or "candidate"


def shadow_date(settings: Settings, day: date, candidate: str | Path) -> ShadowResult:
    """Score ``day`` with a candidate policy and write what it would do beside the live outputs.

    Parameters
    ----------
    settings
        Settings of the lake (its staged inputs and enforcement state are read).
    candidate
        The candidate policy file.

    Raises
    ------
    NotFound
        When ``day`` has no published run (its inputs are not staged yet).
    PolicyError
        When the candidate does not validate.
    """
    from transforms.pipeline import RunContext, gather_scores, manifest_for, prepare_score, read_scores, score_shard
    from transforms.policy import load_policy

    policy = load_policy(candidate)
    lake = Lake(settings.root)
    d = day.isoformat()
    m = manifest_for(lake, day)
    if m is None or m.get("status") not in ("published", "held"):
        raise NotFound(f"{d} has no published run, so its inputs are not staged",
                       hint=f"run `reputation run --date {d}` first, then shadow it")
    if m.get("policy", {}).get("digest") == policy.digest:
        raise ConfigError(f"{candidate} is the policy {d} was published with; nothing to compare",
                          hint="pass a candidate policy file that differs from the active one")
    version = _safe(policy.version)
    attempt = f"shadow-{uuid.uuid4().hex[:12]}"
    ctx = RunContext(score_date=d, attempt_id=attempt, root=str(lake.root), policy_path=str(candidate),
                     run_id=f"shadow-{version}")
    st = settings.model_copy(update={"root": str(lake.root)})
    try:
        ctx = prepare_score(ctx, st)
        for shard in range(ctx.notes["shards"]):
            score_shard(ctx, shard, st)
        ctx = gather_scores(ctx, st)
        work = Path(ctx.work)
        cand = pl.read_parquet(lake.path(f"{work}/scores/part-0.parquet"))
        held = bool(ctx.notes.get("held"))
        actions = pl.read_parquet(lake.path(f"{work}/{'held_actions' if held else 'actions'}/part-0.parquet"))
        out = f"{work}/shadow"
        lake.write_parquet(table_from_polars(cand, SCORES_SCHEMA), f"{out}/scores.parquet",
                           metadata={"policy_version": policy.version, "shadow": "true"})
        lake.write_parquet(table_from_polars(actions, ACTIONS_SCHEMA), f"{out}/actions.parquet",
                           metadata={"policy_version": policy.version, "shadow": "true", "held": str(held).lower()})
        live = read_scores(lake, day)
        diff = shadow_diff(live, cand)
        lake.write_parquet(diff.to_arrow(), f"{out}/diff.parquet",
                           metadata={"policy_version": policy.version, "active_policy_version":
                                     str(m.get("policy", {}).get("version"))})
        summary = shadow_summary(diff, actions, ctx.notes.get("enforcement") or {}, policy.version,
                                 str(m.get("policy", {}).get("version")), held)
        lake.write_json(summary, f"{out}/summary.json")
        public = f"shadow/{version}/score_date={d}"
        with lake.lock(f"shadow-{version}-{d}", wait_seconds=60):
            lake.commit([(public, out)], f"shadow-{version}-{d}")
    except ReputationError:
        shutil.rmtree(lake.path(f"_attempts/{attempt}"), ignore_errors=True)
        raise
    for leftover in ("typed", "evidence", "scores", "state", "held_state", "actions", "held_actions", "agg",
                     "context.json", "runs"):
        p = lake.path(f"_attempts/{attempt}/{leftover}")
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
    return ShadowResult(day, policy.version, str(lake.path(public)), summary)


def shadow_diff(live: pl.DataFrame, cand: pl.DataFrame) -> pl.DataFrame:
    """Per merchant: the live and the candidate tier, the score delta and the candidate's reasons."""
    a = live.select("merchant_id", pl.col("tier").alias("active_tier"), pl.col("score").alias("active_score"))
    b = cand.select("merchant_id", pl.col("tier").alias("candidate_tier"), pl.col("score").alias("candidate_score"),
                    pl.col("proposed_tier").alias("candidate_proposed_tier"),
                    pl.col("reason_codes").alias("candidate_reasons"))
    return (a.join(b, on="merchant_id", how="full", coalesce=True)
            .with_columns((pl.col("candidate_score") - pl.col("active_score")).alias("score_delta"),
                          (pl.col("active_tier").fill_null("") != pl.col("candidate_tier").fill_null(""))
                          .alias("tier_changed"))
            .select("merchant_id", "active_tier", "candidate_tier", "candidate_proposed_tier", "active_score",
                    "candidate_score", "score_delta", "tier_changed", "candidate_reasons")
            .sort("merchant_id"))


def shadow_summary(diff: pl.DataFrame, actions: pl.DataFrame, enforcement: dict[str, Any], version: str,
                   active_version: str, held: bool) -> dict[str, Any]:
    """Counts for the console and ``summary.json``."""
    changes = (diff.filter(pl.col("tier_changed")).group_by("active_tier", "candidate_tier").len()
               .sort("len", descending=True))
    delta = diff.get_column("score_delta").drop_nulls()
    return {
        "candidate_version": version,
        "active_version": active_version,
        "merchants": diff.height,
        "tier_changes": diff.filter(pl.col("tier_changed")).height,
        "tier_change_matrix": [{"from": r[0], "to": r[1], "merchants": r[2]} for r in changes.iter_rows()],
        "active_tier_counts": dict(diff.group_by("active_tier").len().drop_nulls().sort("active_tier").iter_rows()),
        "candidate_tier_counts": dict(diff.group_by("candidate_tier").len().drop_nulls()
                                      .sort("candidate_tier").iter_rows()),
        "score_delta_mean": round(float(delta.mean()), 4) if delta.len() else None,  # type: ignore[arg-type]
        "score_delta_abs_max": round(float(delta.abs().max()), 4) if delta.len() else None,  # type: ignore[arg-type]
        "would_be_actions": actions.height,
        "would_be_actions_by_kind": dict(actions.group_by("action").len().sort("action").iter_rows()),
        "would_be_new_penalties": enforcement.get("proposed_new_penalties"),
        "would_be_held": held,
        "hold_reason": enforcement.get("hold_reason"),
    }
