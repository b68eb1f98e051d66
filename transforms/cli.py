"""The ``reputation`` command line (see ``docs`` and the data contract).

Exit codes of ``run`` and ``backfill``: 0 published, 1 internal error (a bug),
2 usage or configuration error, 3 input rejected (nothing published), 4 scores
published but enforcement actions held for human review. A data problem ends in
a message naming the file, row or rule and what to do, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import traceback
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transforms.errors import ConfigError, NotFound, ReputationError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Merchant reputation pipeline: generate, run, explain and inspect nightly scores.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

RootOpt = Annotated[str | None, typer.Option("--root", help="Lake root (default: REPUTATION_ROOT or data/lake).")]
DateOpt = Annotated[str, typer.Option("--date", help="Score date, YYYY-MM-DD.")]


def _date(text: str, name: str = "--date") -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{name} {text!r} is not a date", hint="use YYYY-MM-DD") from None


#: Object-store roots are mirrored locally for the command and pushed back when it ends.
_REMOTE = contextlib.ExitStack()


def _settings(root: str | None) -> Any:
    from transforms.objectstore import is_remote, local_root
    from transforms.settings import load_settings

    st = load_settings(root=root)
    if is_remote(st.root):
        local = _REMOTE.enter_context(local_root(st.root))
        err.print(f"object store {st.root}: working on the local mirror {local}", highlight=False)
        st = st.model_copy(update={"root": local})
    return st


def _close_remote() -> None:
    """Push a mirrored object-store lake back (manifests last); failures get a clear message."""
    try:
        _REMOTE.close()
    except ReputationError as exc:
        err.print(f"error: publishing to the object store failed: {exc.message}", highlight=False, markup=False)
        if exc.hint:
            err.print(f"  what to do: {exc.hint}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:  # network or store errors: never a silent half-push
        err.print(f"error: publishing to the object store failed: {exc}; rerun the date to retry",
                  highlight=False, markup=False)
        sys.exit(1)


def _fail(exc: ReputationError) -> None:
    err.print(f"[bold red]error[/]: {escape(exc.message)}", highlight=False, markup=True)
    if exc.hint:
        err.print(f"  what to do: {exc.hint}", highlight=False, markup=False)
    raise typer.Exit(exc.exit_code)


def _setup_logging() -> None:
    import os

    from transforms.logs import configure

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    configure(os.environ.get("REPUTATION_LOG_FORMAT", "text"), os.environ.get("REPUTATION_LOG_LEVEL", "WARNING"))


@app.command()
def run(date_: DateOpt, root: RootOpt = None,
        wait: Annotated[float, typer.Option(help="Seconds to wait for another run of the date.")] = 0.0) -> None:
    """Ingest, validate, score and publish one date."""
    from transforms.pipeline import run_date

    try:
        d = _date(date_)
        st = _settings(root)
        _warn_dev_key(st)
        result = run_date(d, st, wait_seconds=wait)
    except ReputationError as exc:
        _fail(exc)
        return
    _report_result(result)
    raise typer.Exit(result.exit_code)


def _warn_dev_key(st: Any) -> None:
    _, dev = st.pseudonym_key_bytes()
    if dev:
        err.print("[yellow]note[/]: using the public DEVELOPMENT pseudonymisation key; "
                  "set REPUTATION_PSEUDONYM_KEY for real data", highlight=False)


def _report_result(result: Any) -> None:
    colour = {"published": "green", "held": "yellow", "failed": "red"}.get(result.status, "white")
    # Messages name rules as "[rule]": escaped, or rich would take them for markup and drop them.
    line = f"[{colour}]{result.status}[/] {result.score_date} run {result.run_id}: {escape(result.message)}"
    (out if result.exit_code == 0 else err).print(line, highlight=False)
    if result.status == "failed":
        err.print(f"  manifest: {result.manifest_path}", highlight=False)
    else:
        out.print(f"  manifest: {result.manifest_path}", highlight=False)


@app.command()
def backfill(start: Annotated[str, typer.Option("--start")], end: Annotated[str, typer.Option("--end")],
             root: RootOpt = None,
             force: Annotated[bool, typer.Option(help="Rerun dates that are already published.")] = False) -> None:
    """Run every date from START to END in order; resume from the first unpublished date."""
    from rich.progress import Progress

    from transforms.lake import Lake
    from transforms.pipeline import manifest_for, run_date

    try:
        a, b = _date(start, "--start"), _date(end, "--end")
        if b < a:
            raise ConfigError("--end is before --start")
        st = _settings(root)
        lake = Lake(st.root)
        days = [a + timedelta(days=i) for i in range((b - a).days + 1)]
        done, skipped = [], []
        worst = 0
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("backfill", total=len(days))
            for d in days:
                m = manifest_for(lake, d)
                if not force and m is not None and m.get("status") in ("published", "held"):
                    skipped.append(d)
                    progress.advance(task)
                    continue
                result = run_date(d, st)
                done.append((d, result.status))
                progress.advance(task)
                if result.exit_code not in (0, 4):
                    _report_result(result)
                    err.print(f"backfill stopped at {d}; rerun the same command to resume from it")
                    raise typer.Exit(result.exit_code)
                worst = max(worst, result.exit_code)
    except ReputationError as exc:
        _fail(exc)
        return
    out.print(f"backfill {a}..{b}: ran {len(done)} date(s), skipped {len(skipped)} already published")
    for d, status in done:
        out.print(f"  {d} {status}")
    raise typer.Exit(worst)


@app.command()
def generate(root: Annotated[str, typer.Option("--root", help="Where to write landing/ and truth/.")],
             merchants: Annotated[int, typer.Option(min=1)] = 500,
             days: Annotated[int, typer.Option(min=1)] = 60,
             seed: int = 7,
             start: Annotated[str, typer.Option(help="First business day.")] = "2026-01-01",
             malformed_rows: Annotated[float, typer.Option(help="Share of malformed rows.")] = 0.004,
             malformed_files: Annotated[float, typer.Option(help="Share of malformed files.")] = 0.0) -> None:
    """Write a realistic synthetic marketplace into ROOT's landing zone (deterministic per seed)."""
    from transforms.generate import generate_marketplace

    try:
        s = generate_marketplace(Path(root), merchants=merchants, days=days, seed=seed, start=_date(start, "--start"),
                                 malformed_row_share=malformed_rows, malformed_file_share=malformed_files)
    except ReputationError as exc:
        _fail(exc)
        return
    out.print(f"generated {s.merchants} merchants × {s.days} days ({s.start}..{s.end}) into {s.root}/landing")
    for src, n in s.rows_by_source.items():
        out.print(f"  {src:<11} {n:>10,} rows in {s.files_by_source.get(src, 0):,} files")
    out.print(f"last business day: {s.end}  (reputation run --date {s.end} --root {root})")


@app.command()
def explain(merchant_id: str, date_: DateOpt, root: RootOpt = None,
            as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Explain one merchant's score: every dimension with evidence, reasons and what would change it."""
    from transforms.explain import explain_merchant, render_text

    try:
        st = _settings(root)
        data = explain_merchant(st, merchant_id, _date(date_))
    except ReputationError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        render_text(data, out)


@app.command()
def quarantine(date_: DateOpt, root: RootOpt = None,
               source: Annotated[str | None, typer.Option(help="Only this source.")] = None) -> None:
    """Summarise what was rejected for a date and why."""
    from transforms.lake import Lake
    from transforms.pipeline import manifest_for

    try:
        st = _settings(root)
        lake = Lake(st.root)
        d = _date(date_)
        m = manifest_for(lake, d)
        if m is None:
            raise NotFound(f"no run recorded for {d}", hint=f"run `reputation run --date {d}` first")
    except ReputationError as exc:
        _fail(exc)
        return
    table = Table(title=f"quarantine as of {d} (status {m['status']})")
    for col in ("source", "read", "accepted", "quarantined", "duplicate", "superseded", "top reasons"):
        table.add_column(col)
    for name, entry in m["sources"].items():
        if source and name != source:
            continue
        rows = entry.get("rows", {})
        reasons = sorted(entry.get("quarantined_by_reason", {}).items(), key=lambda kv: -kv[1])[:4]
        table.add_row(name, *(str(rows.get(k, "-")) for k in ("read", "accepted", "quarantined", "duplicate",
                                                               "superseded")),
                      ", ".join(f"{r} ({n})" for r, n in reasons))
        for f in entry.get("file_failures", []):
            table.add_row(name, "file", "", "", "", "", escape(f"{f['file']}: [{f['rule']}] {f['message']}"))
    out.print(table)


@app.command()
def status(root: RootOpt = None, date_: Annotated[str | None, typer.Option("--date")] = None,
           last: int = 10) -> None:
    """List recent runs with their state, row counts and durations."""
    from transforms.lake import Lake
    from transforms.pipeline import manifest_for

    st = _settings(root)
    lake = Lake(st.root)
    days = lake.partitions("runs", "score_date")
    if date_:
        days = [d for d in days if d == _date(date_)]
    table = Table(title=f"runs in {lake.root}")
    for col in ("score_date", "status", "run_id", "scores", "actions", "quarantined", "seconds"):
        table.add_column(col)
    for d in days[-last:]:
        m = manifest_for(lake, d) or {}
        q = sum(s.get("rows", {}).get("quarantined", 0) for s in m.get("sources", {}).values())
        outputs = m.get("outputs") or {}
        table.add_row(d.isoformat(), str(m.get("status")), str(m.get("run_id")),
                      str(outputs.get("scores", {}).get("rows", "-")), str(outputs.get("actions", {}).get("rows", "-")),
                      str(q), f"{sum((m.get('timings_seconds') or {}).values()):.1f}")
    out.print(table)


@app.command()
def report(date_: DateOpt, root: RootOpt = None) -> None:
    """Rebuild the governance report runs/score_date=D/report.html from the published outputs."""
    from transforms.lake import Lake
    from transforms.report import write_report

    try:
        st = _settings(root)
        path = write_report(Lake(st.root), _date(date_))
    except ReputationError as exc:
        _fail(exc)
        return
    out.print(f"wrote {path}", highlight=False)


@app.command()
def release(date_: DateOpt, root: RootOpt = None) -> None:
    """Publish the enforcement actions held on DATE, after a person has reviewed them.

    Moves held_actions/score_date=D to actions/score_date=D, advances the enforcement
    state of D as if nothing had been held, and marks the run published (released: true).
    """
    from transforms.enforcement_ops import release_date

    try:
        d = _date(date_)
        st = _settings(root)
        result = release_date(st, d)
    except ReputationError as exc:
        _fail(exc)
        return
    out.print(f"[green]released[/] {d}: {result.actions} enforcement action(s) published to "
              f"actions/score_date={d}", highlight=False)
    out.print(f"  manifest: {result.manifest_path}", highlight=False)
    if result.later_dates:
        first, last_ = result.later_dates[0], result.later_dates[-1]
        err.print(f"[yellow]note[/]: {len(result.later_dates)} later date(s) ({first}..{last_}) were scored from "
                  f"the state before this release; rerun them: reputation backfill --start {first} --end {last_} "
                  "--force", highlight=False)


@app.command()
def shadow(date_: DateOpt, policy: Annotated[str, typer.Option("--policy", help="Candidate policy YAML file.")],
           root: RootOpt = None) -> None:
    """Score DATE with a candidate policy and compare; writes only under shadow/<version>/."""
    from transforms.enforcement_ops import shadow_date

    try:
        d = _date(date_)
        st = _settings(root)
        result = shadow_date(st, d, policy)
    except ReputationError as exc:
        _fail(exc)
        return
    s = result.summary
    out.print(f"shadow {d}: candidate policy {s['candidate_version']} vs active {s['active_version']} "
              f"→ {escape(result.path)}", highlight=False)
    table = Table(title=f"tiers on {d}")
    for col in ("tier", "active", "candidate"):
        table.add_column(col)
    tiers = list(dict.fromkeys([*s["active_tier_counts"], *s["candidate_tier_counts"]]))
    for t in tiers:
        table.add_row(t, str(s["active_tier_counts"].get(t, 0)), str(s["candidate_tier_counts"].get(t, 0)))
    out.print(table)
    out.print(f"  merchants whose tier would change: {s['tier_changes']} of {s['merchants']}; mean score delta "
              f"{s['score_delta_mean']}, largest |delta| {s['score_delta_abs_max']}", highlight=False)
    for c in s["tier_change_matrix"][:10]:
        out.print(f"    {c['from']} → {c['to']}: {c['merchants']}", highlight=False)
    out.print(f"  would-be actions: {s['would_be_actions']} {s['would_be_actions_by_kind']}; new penalties "
              f"{s['would_be_new_penalties']}" + (f"; WOULD BE HELD ({s['hold_reason']})" if s["would_be_held"]
                                                  else ""), highlight=False)


@app.command()
def expectations(write: Annotated[bool, typer.Option(help="Rewrite expectations/*.json from the contract.")] = False
                 ) -> None:
    """Show (or rewrite) the Great Expectations suites generated from the data contract."""
    from transforms.expectations import expectations_dir, suite_for_source, write_suites
    from transforms.schemas import SOURCES

    if write:
        for p in write_suites():
            out.print(f"wrote {p}")
        return
    for s in SOURCES.values():
        suite = suite_for_source(s)
        out.print(f"{suite['name']}: {len(suite['expectations'])} expectations ({expectations_dir()})")


def main() -> None:
    """Console-script entry point: map every failure to the contract's exit codes."""
    _setup_logging()
    try:
        try:
            app()
        finally:
            _close_remote()
    except ReputationError as exc:
        err.print(f"error: {exc.message}", highlight=False, markup=False)
        if exc.hint:
            err.print(f"  what to do: {exc.hint}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # a bug: say so plainly, keep the trace for the report
        err.print("internal error (a bug in the pipeline, not in your data). Trace follows; please report it.",
                  highlight=False, markup=False)
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
