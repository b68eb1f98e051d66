"""The governance report: one self-contained HTML page per score date.

``runs/score_date=D/report.html`` shows the night at a glance for the governance
team: how scores are spread in each category, how many merchants sit in each tier
and how they moved since the previous published day, the biggest score movers,
merchants that need a person (collective-complaint flags, complaint surges, held
actions), and what validation read, accepted and quarantined per source, with a
link to the Great Expectations Data Docs of the run.

The page is built only from published outputs (scores, actions, manifest) and has
no external references: CSS is inline and every chart is an SVG drawn here, so it
opens from a file share, an e-mail attachment or an air-gapped laptop.

:func:`render_report` is pure (frames and the manifest in, HTML out);
:func:`build_report` reads a published date from the lake and
:func:`write_report` rewrites ``report.html`` in place atomically.
:func:`transforms.pipeline.publish` renders the page into the attempt folder
before the commit, so it appears together with the manifest.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from transforms.errors import NotFound
from transforms.lake import Lake

REPORT_NAME = "report.html"

#: Colours of the tiers of the packaged policy; other tier names get the fallback cycle.
TIER_COLOURS = {
    "good_standing": "#2e7d32",
    "watch": "#c9a227",
    "warning": "#ef6c00",
    "restricted": "#c62828",
    "suspended": "#6d1b1b",
    "insufficient_evidence": "#9e9e9e",
}
_FALLBACK_COLOURS = ("#1f77b4", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22")
SEGMENT_COLOURS = {"accepted": "#4e79a7", "quarantined": "#e15759", "duplicate": "#f28e2b", "superseded": "#b07aa1"}
SOURCE_COLOURS = {"merchants": "#4e79a7", "sales": "#59a14f", "reviews": "#f28e2b", "complaints": "#9c755f",
                  "returns": "#76b7b2"}
INSUFFICIENT = "insufficient_evidence"
#: Tier order when the policy that produced the scores cannot be loaded.
DEFAULT_TIER_ORDER = ("good_standing", "watch", "warning", "restricted", "suspended")

MAX_CATEGORIES = 40      # histogram strips drawn (the rest are summarised in a note)
MOVERS_EACH_WAY = 12     # biggest falls and biggest rises drawn
MAX_FLAGGED_ROWS = 200   # rows of the human-attention table
FLAGGED_TABLE_ROWS = 25  # rows shown before the rest is folded away
FLAGGED_CHART_ROWS = 20
TOP_REASONS = 12


@dataclass
class ReportInputs:
    """Everything one report is drawn from (all already read from the lake or the attempt).

    Attributes
    ----------
    day
        The score date.
    manifest
        The run manifest (``runs/score_date=D/manifest.json``).
    scores
        The date's score rows (may be empty for a failed run).
    previous
        The latest published score rows strictly before ``day``, or ``None``.
    actions
        The date's action rows (the feed, or the held actions when the run is held), or ``None``.
    tiers
        ``(name, min_score)`` of the policy's tiers, best first, when known.
    data_docs_href
        Link to the Data Docs, relative to the report.
    """

    day: date
    manifest: dict[str, Any]
    scores: pl.DataFrame
    previous: pl.DataFrame | None = None
    actions: pl.DataFrame | None = None
    tiers: list[tuple[str, float]] = field(default_factory=list)
    data_docs_href: str = "data_docs/index.html"


# =============================================================================== I/O
def build_report(lake: Lake, day: date) -> str:
    """Render the report of a published (or failed) date from the lake.

    Raises
    ------
    NotFound
        When the date has no run manifest.
    """
    from transforms.pipeline import latest_before, manifest_for, read_scores

    manifest = manifest_for(lake, day)
    if manifest is None:
        raise NotFound(f"no run recorded for {day}", hint=f"run `reputation run --date {day}` first")
    scores = read_scores(lake, day) if manifest.get("status") in ("published", "held") else pl.DataFrame()
    return render_report(ReportInputs(
        day=day, manifest=manifest, scores=scores, previous=latest_before(lake, "scores", day),
        actions=_read_actions(lake, manifest), tiers=policy_tiers(manifest)))


def write_report(lake: Lake, day: date) -> Path:
    """Rebuild ``runs/score_date=D/report.html`` in place; returns its public path.

    The page is written to a temporary name in the same (resolved) folder and renamed
    over the old one, under the date's commit lock so it never mixes two runs.
    """
    with lake.lock(f"commit-{day.isoformat()}", wait_seconds=60):
        text = build_report(lake, day)
        public = lake.path(f"runs/score_date={day.isoformat()}")
        folder = public.resolve()
        tmp = folder / f".{REPORT_NAME}.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / REPORT_NAME)
    return public / REPORT_NAME


def _read_actions(lake: Lake, manifest: dict[str, Any]) -> pl.DataFrame | None:
    outputs = manifest.get("outputs") or {}
    for key in ("held_actions", "actions"):
        entry = outputs.get(key)
        if isinstance(entry, dict) and entry.get("path"):
            files = lake.parquet_files(str(entry["path"]))
            return pl.read_parquet(files) if files else None
    return None


def policy_tiers(manifest: dict[str, Any]) -> list[tuple[str, float]]:
    """Tiers of the policy named in the manifest, if that exact version can be loaded."""
    from transforms.errors import ReputationError
    from transforms.policy import load_policy

    info = manifest.get("policy") or {}
    path = info.get("path")
    for candidate in ([Path(str(path))] if path not in (None, "packaged") else []) + [None]:
        try:
            policy = load_policy(candidate)
        except (ReputationError, OSError, ValueError):
            continue
        if policy.digest == info.get("digest") or policy.version == info.get("version"):
            return [(t.name, float(t.min_score)) for t in policy.tiers]
    return []


# ============================================================================ render
def render_report(inp: ReportInputs) -> str:
    """The whole page as one HTML string (no external references)."""
    scores = inp.scores
    has_scores = scores.height > 0 and "score" in scores.columns
    prev = inp.previous if inp.previous is not None and inp.previous.height > 0 else None
    order = _tier_order(inp.tiers, [scores, prev])
    colours = _tier_colours(order)
    prev_day = _first_date(prev)
    sections = [
        _header(inp, prev_day),
        _section("distribution", "Score distribution by category",
                 _distribution(scores, inp.tiers, colours) if has_scores else _note("No scores were published.")),
        _section("tiers", "Tiers and transitions",
                 _tiers(scores, prev, prev_day, order, colours) if has_scores
                 else _note("No scores were published.")),
        _section("movers", "Biggest movers", _movers(scores, prev, prev_day, colours) if has_scores
                 else _note("No scores were published.")),
        _section("attention", "Needs a person", _attention(inp, order, colours)),
        _section("validation", "Validation by source", _validation(inp)),
        _footer(inp),
    ]
    title = f"Merchant reputation — {inp.day.isoformat()}"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(sections) + "\n</main>\n</body>\n</html>\n")


_CSS = """
:root{--ink:#1d2329;--muted:#5f6b76;--line:#d9dee3;--bg:#f6f7f9;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Noto Sans","PingFang SC","Microsoft YaHei",sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:16px 0 6px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0}
.sub{color:var(--muted)}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:12px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:130px;background:#fbfcfd}
.card b{display:block;font-size:20px}
.card span{color:var(--muted);font-size:12px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600;
vertical-align:middle}
.published{background:#2e7d32}.held{background:#ef6c00}.failed{background:#c62828}
svg.chart{display:block;width:100%;height:auto;margin:6px 0 2px}
svg text{font-family:inherit;font-size:11px;fill:var(--ink)}
svg .muted{fill:var(--muted)}
svg .axis{stroke:#aab3bc;stroke-width:1}
svg .grid{stroke:#e6e9ec;stroke-width:1}
svg .iqr{stroke:#1d2329;stroke-width:3}
svg .thr{stroke:#55606a;stroke-width:1;stroke-dasharray:3 3}
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f4;font-weight:600;white-space:nowrap}
td.n{white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;color:var(--muted);margin:4px 0}
.legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.note{color:var(--muted);font-style:italic}
.warn{color:#b23c17;font-weight:600}
.two{display:grid;grid-template-columns:1fr 1fr;gap:18px}
@media (max-width:900px){.two{grid-template-columns:1fr}}
code{background:#f0f2f4;padding:0 3px;border-radius:3px}
footer{color:var(--muted);font-size:12px;margin:18px 0}
"""


# ---------------------------------------------------------------------------- helpers
def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "–"


def _svg(width: int, height: int, body: Iterable[str], label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" style="max-width:{width}px" role="img" '
            f'aria-label="{_e(label)}"><title>{_e(label)}</title>' + "".join(body) + "</svg>")


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str | None = None, extra: str = "") -> str:
    tip_el = f"<title>{_e(tip)}</title>" if tip else ""
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}"{extra}>'
            f"{tip_el}</rect>")


def _text(x: float, y: float, s: object, anchor: str = "start", cls: str = "", extra: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}{extra}>{_e(s)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, cls: str = "axis", extra: str = "") -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{cls}"{extra}/>'


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{_e(n)}</span>'
                                            for n, c in items) + "</div>"


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    num = set(numeric)
    th = "".join(f'<th class="n">{_e(h)}</th>' if i in num else f"<th>{_e(h)}</th>" for i, h in enumerate(head))
    body = []
    for r in rows:
        body.append("<tr>" + "".join(f'<td class="n">{_e(v)}</td>' if i in num else f"<td>{_e(v)}</td>"
                                     for i, v in enumerate(r)) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _first_date(frame: pl.DataFrame | None) -> date | None:
    if frame is None or "score_date" not in frame.columns or frame.height == 0:
        return None
    value = frame.get_column("score_date").max()
    return value if isinstance(value, date) else None


def _tier_order(tiers: list[tuple[str, float]], frames: Sequence[pl.DataFrame | None]) -> list[str]:
    present: set[str] = set()
    for f in frames:
        if f is not None and "tier" in f.columns:
            present |= {t for t in f.get_column("tier").unique().to_list() if t is not None}
    base = [t for t, _ in tiers] or [t for t in DEFAULT_TIER_ORDER if t in present]
    extra = sorted(present - set(base) - {INSUFFICIENT})
    order = base + extra
    if INSUFFICIENT in present or not tiers:
        order.append(INSUFFICIENT)
    return [t for t in order if t in present or tiers]


def _tier_colours(order: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    k = 0
    for t in order:
        if t in TIER_COLOURS:
            out[t] = TIER_COLOURS[t]
        else:
            out[t] = _FALLBACK_COLOURS[k % len(_FALLBACK_COLOURS)]
            k += 1
    return out


def _band(score: float, tiers: list[tuple[str, float]]) -> str | None:
    for name, lo in tiers:
        if score >= lo:
            return name
    return None


# ---------------------------------------------------------------------------- header
def _header(inp: ReportInputs, prev_day: date | None) -> str:
    m = inp.manifest
    status = str(m.get("status", "unknown"))
    policy = m.get("policy") or {}
    outputs = m.get("outputs") or {}
    enforcement = m.get("enforcement") or {}
    sources = m.get("sources") or {}
    today = inp.day.isoformat()
    quarantined_today = sum(int(((s.get("by_delivery_day") or {}).get(today) or {}).get("quarantined", 0))
                            for s in sources.values())
    actions_key = "held_actions" if "held_actions" in outputs else "actions"
    n_actions = (outputs.get(actions_key) or {}).get("rows", "–") if isinstance(outputs.get(actions_key), dict) \
        else "–"
    timings = m.get("timings_seconds") or {}
    cards = [
        (_fmt(inp.scores.height) if inp.scores.height else "0", "merchants scored"),
        (str(n_actions), "actions HELD for review" if actions_key == "held_actions" else "enforcement actions"),
        (_fmt(enforcement.get("new_penalties")) if enforcement.get("new_penalties") is not None else "–",
         "new penalties"),
        (_fmt(quarantined_today), f"rows quarantined (delivered {today})"),
        (f"{sum(float(v) for v in timings.values()):.1f} s", "run time"),
    ]
    if inp.scores.height and "tier" in inp.scores.columns:
        insufficient = inp.scores.filter(pl.col("tier") == INSUFFICIENT).height
        cards.insert(1, (_fmt(insufficient), "insufficient evidence"))
    card_html = "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in cards)
    lines = [f'<h1>Merchant reputation — {_e(today)} <span class="badge {_e(status)}">{_e(status)}</span></h1>',
             f'<div class="sub">run <code>{_e(m.get("run_id", "–"))}</code> · policy '
             f'<code>{_e(policy.get("version", "–"))}</code> · schema {_e(m.get("schema_version", "–"))} · '
             f'compared with {_e(prev_day.isoformat()) if prev_day else "no earlier published date"}</div>']
    if status == "held":
        lines.append(f'<p class="warn">Enforcement actions are held for human review: '
                     f'{_e(enforcement.get("hold_reason") or "a guard tripped")}. Nothing reached the actions feed; '
                     f'release them with <code>reputation release --date {_e(today)}</code> after review.</p>')
    if status == "failed":
        err = m.get("error") or {}
        lines.append(f'<p class="warn">The run failed at {_e(err.get("stage", "?"))}: {_e(err.get("message", ""))}'
                     f' — nothing was published for this date.</p>')
        if err.get("hint"):
            lines.append(f"<p>What to do: {_e(err['hint'])}</p>")
    gate = m.get("gate") or {}
    if gate.get("tripped") and gate.get("override"):
        lines.append('<p class="warn">The fail-closed gate tripped and was overridden by the policy '
                     '(<code>gate.override</code>): see Validation.</p>')
    return '<header>\n' + "\n".join(lines) + f'\n<div class="cards">{card_html}</div>\n</header>'


# ---------------------------------------------------------------------- distribution
def _distribution(scores: pl.DataFrame, tiers: list[tuple[str, float]], colours: dict[str, str]) -> str:
    """One histogram strip per category (2-point bins), coloured by the policy's score band."""
    bins = 50
    cats = (scores.group_by("category").agg(
        pl.len().alias("n"), pl.col("score").median().alias("median"),
        pl.col("score").quantile(0.25, "linear").alias("q1"), pl.col("score").quantile(0.75, "linear").alias("q3"),
        (pl.col("tier") == INSUFFICIENT).sum().alias("insufficient"))
        .sort("n", "category", descending=[True, False]))
    shown = cats.head(MAX_CATEGORIES).sort("category")
    counts = (scores.select("category", (pl.col("score") / (100 / bins)).floor().clip(0, bins - 1)
                            .cast(pl.Int32).alias("bin"))
              .group_by("category", "bin").len())
    table: dict[str, dict[int, int]] = {}
    for cat, b, n in counts.iter_rows():
        table.setdefault(cat, {})[b] = n
    left, plot_w, row_h, top = 210, 800, 46, 34
    width = left + plot_w + 30
    height = top + row_h * shown.height + 28
    x = lambda s: left + plot_w * s / 100.0  # noqa: E731
    body: list[str] = []
    for tick in range(0, 101, 10):
        body.append(_line(x(tick), top - 6, x(tick), height - 24, "grid"))
        body.append(_text(x(tick), height - 10, tick, "middle", "muted"))
    body.append(_text(left - 10, height - 10, "score", "end", "muted"))
    for name, lo in tiers:
        if lo > 0:
            body.append(_line(x(lo), top - 14, x(lo), height - 24, "thr"))
            body.append(_text(x(lo) + 3, top - 16, f"{name} ≥ {lo:g}", "start", "muted"))
    for i, (cat, n, median, q1, q3, insufficient) in enumerate(shown.iter_rows()):
        y0 = top + i * row_h
        base = y0 + row_h - 8
        row = table.get(cat, {})
        peak = max(row.values()) if row else 1
        body.append(_text(left - 10, y0 + 18, cat, "end"))
        body.append(_text(left - 10, y0 + 32, f"n={n:,} · median {median:.1f}"
                          + (f" · {insufficient} insuff." if insufficient else ""), "end", "muted"))
        body.append(_line(left, base, left + plot_w, base, "axis"))
        bw = plot_w / bins
        for b in range(bins):
            c = row.get(b, 0)
            if not c:
                continue
            h = (row_h - 14) * c / peak
            band = _band((b + 0.5) * 100 / bins, tiers)
            fill = colours.get(band or "", "#4e79a7")
            body.append(_rect(left + b * bw + 0.5, base - h, bw - 1, h, fill,
                              f"{cat}: {c} merchants scoring {b * 100 // bins}–{(b + 1) * 100 // bins}"))
        body.append(_line(x(q1), base + 4, x(q3), base + 4, "iqr"))
        body.append(f'<path d="M{x(median):.1f},{base - 2:.1f} l-4,8 h8 z" fill="#1d2329">'
                    f"<title>{_e(cat)}: median {median:.1f}, IQR {q1:.1f}–{q3:.1f}</title></path>")
    svg = _svg(width, height, body, "Histogram of scores per category")
    legend = _legend([(f"{t} band", colours[t]) for t, _ in tiers if t in colours]
                     or [("merchants per 2-point bin", "#4e79a7")])
    note = ""
    if cats.height > shown.height:
        note = _note(f"{cats.height - shown.height} smaller categories are not drawn.")
    return (f'<p class="sub">Each strip is a histogram of the category\'s scores in 2-point bins (bar height '
            f"relative to the strip's tallest bin); the black bar under it spans the middle half (25th–75th "
            f"percentile), the triangle marks the median. Dashed lines are the tier thresholds; bars are coloured "
            f"by the score band (the enforced tier can differ: hysteresis, insufficient evidence).</p>"
            f"{legend}{svg}{note}")


# ----------------------------------------------------------------------------- tiers
def _tiers(scores: pl.DataFrame, prev: pl.DataFrame | None, prev_day: date | None, order: list[str],
           colours: dict[str, str]) -> str:
    today = dict(scores.group_by("tier").len().iter_rows())
    before = dict(prev.group_by("tier").len().iter_rows()) if prev is not None else {}
    tiers = [t for t in order if today.get(t) or before.get(t)]
    peak = max([*today.values(), *before.values(), 1])
    left, plot_w, row_h, top = 140, 330, 44, 10
    width, height = left + plot_w + 60, top + row_h * len(tiers) + 10
    body: list[str] = []
    for i, t in enumerate(tiers):
        y = top + i * row_h
        body.append(_text(left - 8, y + 24, t, "end"))
        if prev is not None:
            w = plot_w * before.get(t, 0) / peak
            body.append(_rect(left, y + 3, w, 15, colours.get(t, "#888"), f"{t} on {prev_day}: {before.get(t, 0)}",
                              ' fill-opacity="0.35"'))
            body.append(_text(left + w + 4, y + 15, f"{before.get(t, 0):,}", cls="muted"))
        w = plot_w * today.get(t, 0) / peak
        yb = y + (20 if prev is not None else 10)
        body.append(_rect(left, yb, w, 17, colours.get(t, "#888"), f"{t} today: {today.get(t, 0)}"))
        body.append(_text(left + w + 4, yb + 13, f"{today.get(t, 0):,}"))
    bars = _svg(width, height, body, "Merchants per tier, previous day and today")
    legend = ('<div class="legend"><span><i style="background:#555;opacity:.35"></i>'
              f'{_e(prev_day.isoformat()) if prev_day else "previous"}</span><span><i style="background:#555"></i>'
              "today (enforced tier)</span></div>") if prev is not None else ""
    if prev is None:
        matrix = _note("No earlier published date: transitions start tomorrow.")
    else:
        matrix = _transition_matrix(scores, prev, order)
    return (f'<div class="two"><div><h3>Merchants per tier</h3>{legend}{bars}</div>'
            f'<div><h3>Transitions since {_e(prev_day.isoformat() if prev_day else "–")}</h3>{matrix}</div></div>')


def _transition_matrix(scores: pl.DataFrame, prev: pl.DataFrame, order: list[str]) -> str:
    joined = (prev.select("merchant_id", pl.col("tier").alias("from"))
              .join(scores.select("merchant_id", pl.col("tier").alias("to")), on="merchant_id", how="full",
                    coalesce=True)
              .with_columns(pl.col("from").fill_null("(new)"), pl.col("to").fill_null("(gone)"))
              .group_by("from", "to").len())
    cells = {(f, t): n for f, t, n in joined.iter_rows()}
    rows = [t for t in order if any(f == t for f, _ in cells)] + (["(new)"] if any(f == "(new)" for f, _ in cells)
                                                                   else [])
    cols = [t for t in order if any(c == t for _, c in cells)] + (["(gone)"] if any(c == "(gone)" for _, c in cells)
                                                                   else [])
    cell, left, top = 54, 150, 110
    width, height = left + cell * len(cols) + 110, top + cell * len(rows) + 10
    peak = max(cells.values()) if cells else 1
    body: list[str] = []
    for j, c in enumerate(cols):
        cx = left + j * cell + cell / 2 - 4
        body.append(_text(cx, top - 8, c, "start", extra=f' transform="rotate(-45 {cx:.1f} {top - 8})"'))
    for i, r in enumerate(rows):
        y = top + i * cell
        body.append(_text(left - 8, y + cell / 2 + 4, r, "end"))
        for j, c in enumerate(cols):
            n = cells.get((r, c), 0)
            t = math.log1p(n) / math.log1p(peak) if n else 0.0
            fill = _blend("#f3f6fa", "#08519c", t) if n else "#fafbfc"
            stroke = ' stroke="#1d2329" stroke-width="1.5"' if r == c else ' stroke="#e1e5ea" stroke-width="1"'
            body.append(_rect(left + j * cell, y, cell - 2, cell - 2, fill, f"{r} → {c}: {n:,} merchants", stroke))
            if n:
                body.append(_text(left + j * cell + (cell - 2) / 2, y + cell / 2 + 3, f"{n:,}", "middle",
                                  extra=' style="fill:#fff"' if t > 0.55 else ""))
    body.append(_text(left - 8, top - 8, "from ↓   to →", "end", "muted"))
    return (_svg(width, height, body, "Tier transition matrix: previous day (rows) to today (columns)")
            + '<p class="sub">Rows: tier on the previous published day; columns: tier today. Outlined cells: '
              "unchanged. Colour is logarithmic in the count.</p>")


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k not below ``value`` (for axis ends)."""
    exp = math.floor(math.log10(value))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10 ** exp >= value:
            return m * 10 ** exp
    return 10.0 ** (exp + 1)


def _blend(a: str, b: str, t: float) -> str:
    ca = [int(a[i:i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


# ---------------------------------------------------------------------------- movers
def _movers(scores: pl.DataFrame, prev: pl.DataFrame | None, prev_day: date | None,
            colours: dict[str, str]) -> str:
    if prev is None:
        return _note("No earlier published date to compare with.")
    cols = ["merchant_id", "category", "score", "tier"]
    reasons = "reason_codes" in scores.columns
    joined = (scores.select(*cols, *(["reason_codes"] if reasons else []))
              .join(prev.select("merchant_id", pl.col("score").alias("prev_score"), pl.col("tier").alias("prev_tier")),
                    on="merchant_id", how="inner")
              .with_columns((pl.col("score") - pl.col("prev_score")).alias("delta"))
              .filter(pl.col("delta").abs() >= 0.05))
    if joined.height == 0:
        return _note(f"No merchant's score moved by 0.05 points or more since {prev_day}.")
    falls = joined.filter(pl.col("delta") < 0).sort("delta", "merchant_id").head(MOVERS_EACH_WAY)
    rises = joined.filter(pl.col("delta") > 0).sort(["delta", "merchant_id"], descending=[True, False]) \
        .head(MOVERS_EACH_WAY)
    movers = pl.concat([falls, rises.sort("delta")])
    peak = float(movers.get_column("delta").abs().max() or 1.0)  # type: ignore[arg-type]
    left, half, row_h, top = 420, 280, 20, 26
    mid = left + half
    width, height = mid + half + 70, top + row_h * movers.height + 24
    body: list[str] = [_line(mid, top - 6, mid, height - 18, "axis"),
                       _text(mid - 6, 14, "score fell", "end", "muted"), _text(mid + 6, 14, "score rose", "start",
                                                                                  "muted")]
    for i, row in enumerate(movers.iter_rows(named=True)):
        y = top + i * row_h
        d = float(row["delta"])
        w = (half - 48) * abs(d) / peak
        x0 = mid - w if d < 0 else mid
        fill = colours.get(row["tier"], "#888")
        tier_txt = row["tier"] if row["tier"] == row["prev_tier"] else f"{row['prev_tier']} → {row['tier']}"
        tip = (f"{row['merchant_id']} ({row['category']}): {row['prev_score']:.1f} → {row['score']:.1f} "
               f"({d:+.1f}); {tier_txt}")
        body.append(_rect(x0, y + 3, w, row_h - 6, fill, tip))
        body.append(_text(left - 8, y + 14, f"{row['merchant_id']} · {row['category']} · {tier_txt}", "end"))
        body.append(_text(x0 - 4 if d < 0 else x0 + w + 4, y + 14, f"{d:+.1f}", "end" if d < 0 else "start",
                          "muted"))
    svg = _svg(width, height, body, f"Biggest score changes since {prev_day}")
    shown = "".join(f"<li><code>{_e(r['merchant_id'])}</code> {r['prev_score']:.1f} → {r['score']:.1f}"
                    + (f" — {_e(', '.join(r['reason_codes']))}" if reasons and r["reason_codes"] else "") + "</li>"
                    for r in falls.head(5).iter_rows(named=True))
    total_moved = joined.height
    return (f'<p class="sub">Score change since {_e(prev_day)} for the {MOVERS_EACH_WAY} biggest falls and rises '
            f"({total_moved:,} merchants moved by at least 0.05 points). Bars are coloured by today's tier; "
            f"<code>reputation explain MERCHANT --date D</code> gives the evidence.</p>{svg}"
            + (f"<h3>Largest falls and their reasons</h3><ul>{shown}</ul>" if shown else ""))


# ------------------------------------------------------------------------- attention
def _attention(inp: ReportInputs, order: list[str], colours: dict[str, str]) -> str:
    scores = inp.scores
    status = inp.manifest.get("status")
    actions = inp.actions if inp.actions is not None and inp.actions.height else None
    parts: list[str] = []
    if actions is not None:
        parts.append(_actions_chart(actions, status == "held", order, colours))
    elif status in ("published", "held"):
        parts.append(_note("No enforcement state changed on this date."))
    if not scores.height:
        return "\n".join(parts)
    flagged = _flagged(scores, actions if status == "held" else None)
    if flagged.height:
        parts.append(f"<h3>Merchants flagged for review ({flagged.height:,})</h3>" + _flagged_chart(flagged, colours))
        rows = [(r["merchant_id"], r["category"], f"{r['score']:.1f}", r["tier"], _fmt(r["complaints"]),
                 _fmt(r["surge"]), r["why"]) for r in flagged.head(MAX_FLAGGED_ROWS).iter_rows(named=True)]
        head = ["merchant", "category", "score", "tier", "complaints in window", "of which in a surge", "why"]
        parts.append(_table(head, rows[:FLAGGED_TABLE_ROWS], numeric=(2, 4, 5)))
        if len(rows) > FLAGGED_TABLE_ROWS:
            parts.append(f"<details><summary>{len(rows) - FLAGGED_TABLE_ROWS} more</summary>"
                         + _table(head, rows[FLAGGED_TABLE_ROWS:], numeric=(2, 4, 5)) + "</details>")
        if flagged.height > MAX_FLAGGED_ROWS:
            parts.append(_note(f"{flagged.height - MAX_FLAGGED_ROWS} more not listed."))
    else:
        parts.append(_note("No merchant is flagged for collective complaints or complaint surges, and no action "
                           "is held."))
    if "is_collective_complaint" not in scores.columns:
        parts.append('<p class="sub">Note: collective-complaint flags are not in this run\'s scores (column '
                     "<code>is_collective_complaint</code> absent); merchants with complaint surges are shown.</p>")
    return "\n".join(parts)


def _flagged(scores: pl.DataFrame, held: pl.DataFrame | None) -> pl.DataFrame:
    """Merchants a person must look at: collective complaints, complaint surges, held actions."""
    cols = scores.columns
    surge = pl.col("surge_complaint_count").fill_null(0) if "surge_complaint_count" in cols else pl.lit(0)
    collective = (pl.col("is_collective_complaint").fill_null(False) if "is_collective_complaint" in cols
                  else pl.lit(False))
    complaints = pl.col("complaint_count") if "complaint_count" in cols else pl.lit(None, pl.Int64)
    f = scores.select("merchant_id", "category", "score", "tier", complaints.cast(pl.Int64).alias("complaints"),
                      surge.cast(pl.Int64).alias("surge"), collective.cast(pl.Boolean).alias("collective"))
    if held is not None:
        f = f.join(held.select("merchant_id", pl.col("action").alias("held_action")).unique("merchant_id"),
                   on="merchant_id", how="left")
    else:
        f = f.with_columns(pl.lit(None, pl.String).alias("held_action"))
    why = pl.concat_list(
        pl.when(pl.col("collective")).then(pl.lit("collective complaint")),
        pl.when(pl.col("surge") > 0).then(pl.lit("complaint surge")),
        pl.when(pl.col("held_action").is_not_null()).then(pl.lit("held action: ") + pl.col("held_action")),
    ).list.drop_nulls().list.join("; ")
    return (f.filter(pl.col("collective") | (pl.col("surge") > 0) | pl.col("held_action").is_not_null())
            .with_columns(why.alias("why"))
            .sort(["collective", "surge", "score", "merchant_id"], descending=[True, True, False, False],
                  nulls_last=True))


def _flagged_chart(flagged: pl.DataFrame, colours: dict[str, str]) -> str:
    top = flagged.head(FLAGGED_CHART_ROWS)
    peak = max(int(top.get_column("complaints").fill_null(0).max() or 0), 1)  # type: ignore[arg-type]
    left, plot_w, row_h, y0 = 330, 520, 20, 6
    width, height = left + plot_w + 200, y0 + row_h * top.height + 6
    body: list[str] = []
    for i, r in enumerate(top.iter_rows(named=True)):
        y = y0 + i * row_h
        total, surge = int(r["complaints"] or 0), int(r["surge"] or 0)
        body.append(_text(left - 8, y + 14, f"{r['merchant_id']} · {r['category']} · {r['score']:.1f} · {r['tier']}",
                          "end"))
        ws, wo = plot_w * surge / peak, plot_w * max(total - surge, 0) / peak
        if ws:
            body.append(_rect(left, y + 3, ws, row_h - 7, "#c62828", f"{r['merchant_id']}: {surge} complaints in a "
                                                                      "surge"))
        if wo:
            body.append(_rect(left + ws, y + 3, wo, row_h - 7, "#b8c0c8",
                              f"{r['merchant_id']}: {total - surge} other complaints"))
        x = left + ws + wo + 6
        if r["collective"]:
            body.append(f'<circle cx="{x + 4:.1f}" cy="{y + 9.5:.1f}" r="5" fill="#6a3d9a">'
                        f"<title>{_e(r['merchant_id'])}: collective complaint</title></circle>")
            x += 14
        if r["held_action"]:
            body.append(f'<path d="M{x + 4:.1f},{y + 3.5:.1f} l5,6 l-5,6 l-5,-6 z" fill="#ef6c00">'
                        f"<title>{_e(r['merchant_id'])}: held {_e(r['held_action'])}</title></path>")
            x += 14
        body.append(_text(x + 2, y + 14, f"{total:,} complaints" if r["complaints"] is not None else "", cls="muted"))
    legend = _legend([("complaints in a surge", "#c62828"), ("other complaints in the window", "#b8c0c8"),
                      ("collective complaint", "#6a3d9a"), ("held action", "#ef6c00")])
    more = f" (first {FLAGGED_CHART_ROWS} drawn)" if flagged.height > FLAGGED_CHART_ROWS else ""
    return (f'<p class="sub">Collective complaints first, then by complaints in a surge{more}. Complaints in a '
            "surge weigh little in the score until a person has reviewed the dispute.</p>" + legend
            + _svg(width, height, body, "Flagged merchants: complaints in the window"))


def _actions_chart(actions: pl.DataFrame, held: bool, order: list[str], colours: dict[str, str]) -> str:
    counts = actions.group_by("action", "to_tier").len().sort("action", "to_tier")
    kinds = sorted(set(counts.get_column("action").to_list()))
    per_kind: dict[str, list[tuple[str, int]]] = {}
    for a, t, n in counts.iter_rows():
        per_kind.setdefault(a, []).append((t, n))
    rank = {t: i for i, t in enumerate(order)}
    peak = max(sum(n for _, n in v) for v in per_kind.values())
    left, plot_w, row_h, top = 170, 480, 26, 8
    width, height = left + plot_w + 60, top + row_h * len(kinds) + 8
    body: list[str] = []
    for i, k in enumerate(kinds):
        y = top + i * row_h
        body.append(_text(left - 8, y + 15, k, "end"))
        x = float(left)
        for t, n in sorted(per_kind[k], key=lambda p: rank.get(p[0], 99)):
            w = plot_w * n / peak
            body.append(_rect(x, y + 3, w, row_h - 8, colours.get(t, "#888"), f"{k} to {t}: {n}"))
            x += w
        body.append(_text(x + 4, y + 15, sum(n for _, n in per_kind[k])))
    title = f"{'Held enforcement' if held else 'Enforcement'} actions by kind and target tier"
    used = sorted({t for t in counts.get_column("to_tier").to_list()}, key=lambda t: rank.get(t, 99))
    head = ('<p class="warn">These actions are HELD: they are not in the actions feed until a person releases '
            "them.</p>") if held else ""
    return f"<h3>{_e(title)}</h3>{head}{_legend([(t, colours.get(t, '#888')) for t in used])}" \
           + _svg(width, height, body, title)


# ------------------------------------------------------------------------ validation
def _validation(inp: ReportInputs) -> str:
    m = inp.manifest
    today = inp.day.isoformat()
    sources: dict[str, Any] = m.get("sources") or {}
    gate = m.get("gate") or {}
    limit = None
    for c in gate.get("checks") or []:
        if c.get("rule") == "quarantine_share" and c.get("limit") is not None:
            limit = float(c["limit"])
            break
    parts = [f'<p>Great Expectations Data Docs of this run: <a href="{_e(inp.data_docs_href)}">'
             f"{_e(inp.data_docs_href)}</a> (every expectation, every failed row count).</p>"]
    # Chart 1: quarantined share of the rows delivered on D, per source, against the gate limit.
    shares = []
    for name, s in sources.items():
        day = (s.get("by_delivery_day") or {}).get(today)
        if day and day.get("read"):
            shares.append((name, int(day["quarantined"]), int(day["read"])))
    if shares:
        left, plot_w, row_h, top = 120, 560, 26, 22
        top_share = _nice_ceiling(max([q / tot for _, q, tot in shares] + [limit or 0.0, 0.001]) * 1.1)
        width, height = left + plot_w + 150, top + row_h * len(shares) + 26
        body: list[str] = []
        for i, (name, q, tot) in enumerate(shares):
            y = top + i * row_h
            w = plot_w * (q / tot) / top_share
            over = limit is not None and q / tot > limit
            body.append(_text(left - 8, y + 15, name, "end"))
            body.append(_rect(left, y + 3, max(w, 1.5), row_h - 8, "#c62828" if over else
                              SOURCE_COLOURS.get(name, "#4e79a7"), f"{name}: {q:,} of {tot:,} rows quarantined"))
            body.append(_text(left + max(w, 1.5) + 4, y + 15, f"{_pct(q, tot)} ({q:,} of {tot:,})", cls="muted"))
        body.append(_line(left, height - 22, left + plot_w, height - 22))
        if limit is not None:
            lx = left + plot_w * limit / top_share
            body.append(_line(lx, top - 8, lx, height - 22, "thr"))
            body.append(_text(lx, top - 10, f"gate limit {limit:.0%}", "middle", "muted"))
        for k in range(5):
            v = top_share * k / 4
            body.append(_text(left + plot_w * k / 4, height - 8, f"{v:.1%}", "middle", "muted"))
        parts.append(f"<h3>Quarantined share of the rows delivered on {_e(today)}</h3>"
                     + _svg(width, height, body, f"Quarantined share per source, delivered {today}"))
    else:
        parts.append(_note(f"No rows were delivered on {today} for any source."))
    # Chart 2: what became of every row read, as of the score date (100 % stacked per source).
    acc = [(name, s.get("rows") or {}) for name, s in sources.items() if (s.get("rows") or {}).get("read")]
    if acc:
        left, plot_w, row_h = 120, 640, 26
        width, height = left + plot_w + 120, row_h * len(acc) + 8
        body = []
        for i, (name, rowcounts) in enumerate(acc):
            y = 4 + i * row_h
            read = int(rowcounts["read"])
            x = float(left)
            body.append(_text(left - 8, y + 15, name, "end"))
            for seg, colour in SEGMENT_COLOURS.items():
                n = int(rowcounts.get(seg) or 0)
                if not n:
                    continue
                w = plot_w * n / read
                body.append(_rect(x, y + 3, max(w, 1.0), row_h - 8, colour, f"{name}: {n:,} {seg} ({_pct(n, read)})"))
                x += w
            body.append(_text(left + plot_w + 6, y + 15, f"read {read:,}", cls="muted"))
        parts.append(f"<h3>What became of every row read (all delivery days up to {_e(today)})</h3>"
                     + _legend(list(SEGMENT_COLOURS.items()))
                     + _svg(width, height, body, "Rows read per source: accepted, quarantined, duplicate, superseded"))
    # Chart 3: top quarantine reasons of the day's deliveries (all staged days when none today).
    reasons: dict[tuple[str, str], int] = {}
    scope = f"delivered on {today}"
    for name, s in sources.items():
        day = (s.get("by_delivery_day") or {}).get(today) or {}
        for r, n in (day.get("quarantined_by_reason") or {}).items():
            reasons[(name, r)] = reasons.get((name, r), 0) + int(n)
    if not reasons:
        scope = f"all delivery days up to {today}"
        for name, s in sources.items():
            for r, n in (s.get("quarantined_by_reason") or {}).items():
                reasons[(name, r)] = reasons.get((name, r), 0) + int(n)
    if reasons:
        top_r = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
        left, plot_w, row_h = 300, 420, 22
        width, height = left + plot_w + 70, row_h * len(top_r) + 8
        peak = top_r[0][1]
        body = []
        for i, ((name, r), n) in enumerate(top_r):
            y = 4 + i * row_h
            w = plot_w * n / peak
            body.append(_text(left - 8, y + 14, f"{name} · {r}", "end"))
            body.append(_rect(left, y + 3, w, row_h - 7, SOURCE_COLOURS.get(name, "#4e79a7"), f"{name} {r}: {n}"))
            body.append(_text(left + w + 4, y + 14, f"{n:,}", cls="muted"))
        used = sorted({n for (n, _), _ in top_r})
        parts.append(f"<h3>Top quarantine reasons ({_e(scope)})</h3>"
                     + _legend([(s, SOURCE_COLOURS.get(s, "#4e79a7")) for s in used])
                     + _svg(width, height, body, f"Top quarantine reasons, {scope}"))
    else:
        parts.append(_note("No row was quarantined."))
    # Table: the manifest's accounting.
    rows = []
    for name, s in sources.items():
        totals: dict[str, Any] = s.get("rows") or {}
        delivered: dict[str, Any] = (s.get("by_delivery_day") or {}).get(today) or {}
        ok = (s.get("validation") or {}).get("success")
        rows.append((name, s.get("files_read", "–"), _fmt(delivered.get("read")), _fmt(delivered.get("quarantined")),
                     *(_fmt(totals.get(k)) for k in ("read", "accepted", "quarantined", "duplicate", "superseded")),
                     "–" if ok is None else ("passed" if ok else "failures"),
                     len(s.get("file_failures") or []) + len(s.get("bad_paths") or [])))
    parts.append("<h3>Accounting</h3>"
                 f'<p class="sub">"today": rows delivered on {_e(today)}; the other counts are '
                 "as of the score date over every delivery day (read = accepted + quarantined + duplicate + "
                 "superseded).</p>"
                 + _table(["source", "files", "read today", "quarantined today", "read", "accepted",
                           "quarantined", "duplicate", "superseded", "suite", "file problems"], rows,
                          numeric=(1, 2, 3, 4, 5, 6, 7, 8, 10)))
    problems = [(name, f.get("file") or f.get("rel"), f.get("rule"), f.get("message"))
                for name, s in sources.items() for f in [*(s.get("file_failures") or []), *(s.get("bad_paths") or [])]]
    if problems:
        parts.append("<h3>File and path problems</h3>" + _table(["source", "path", "rule", "message"], problems))
    tripped = gate.get("tripped") or []
    if tripped:
        parts.append("<h3>Gate</h3>" + (_note("Overridden by the policy (gate.override).")
                                        if gate.get("override") else "")
                     + _table(["rule", "source", "message"],
                              [(c.get("rule"), c.get("source", ""), c.get("message", "")) for c in tripped]))
    else:
        parts.append(f'<p class="sub">Fail-closed gate: {len(gate.get("checks") or [])} checks, none tripped.</p>')
    return "\n".join(parts)


# ---------------------------------------------------------------------------- footer
def _footer(inp: ReportInputs) -> str:
    m = inp.manifest
    timings = m.get("timings_seconds") or {}
    t = ", ".join(f"{k} {float(v):.1f} s" for k, v in timings.items())
    return (f"<footer>Built from the published outputs of {_e(inp.day.isoformat())}: "
            f"<code>scores/score_date={_e(inp.day.isoformat())}</code>, the actions feed and "
            f"<code>manifest.json</code> (attempt {_e(m.get('attempt_id', '–'))}, "
            f"code {_e(m.get('code_version', '–'))})."
            f" Timings: {_e(t or '–')}. Rebuild with <code>reputation report --date {_e(inp.day.isoformat())}"
            "</code>.</footer>")
