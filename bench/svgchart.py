"""A small dependency-free log-log line chart in SVG (for docs/benchmarks.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape


@dataclass
class Series:
    """One line: measured points (filled) and, optionally, extrapolated points (hollow, dashed)."""

    name: str
    color: str
    points: list[tuple[float, float]]
    extrapolated: list[tuple[float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)   # one per measured point (e.g. size names)


def _decades(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0 ** k for k in range(a, b + 1)]


def _fmt(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def loglog_chart(series: list[Series], *, title: str, xlabel: str, ylabel: str, width: int = 760,
                 height: int = 470) -> str:
    """Render the series on log-log axes with decade grid lines and a legend."""
    pts = [p for s in series for p in s.points + s.extrapolated if p[0] > 0 and p[1] > 0]
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    xt = _decades(min(xs) / 1.5, max(xs) * 1.5)
    yt = _decades(min(ys) / 1.5, max(ys) * 1.5)
    left, right, top, bottom = 70, 200, 40, 55
    pw, ph = width - left - right, height - top - bottom
    lx0, lx1 = math.log10(xt[0]), math.log10(xt[-1])
    ly0, ly1 = math.log10(yt[0]), math.log10(yt[-1])

    def px(x: float) -> float:
        return left + (math.log10(x) - lx0) / (lx1 - lx0) * pw

    def py(y: float) -> float:
        return top + ph - (math.log10(y) - ly0) / (ly1 - ly0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left + pw / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
           f'{escape(title)}</text>']
    # grid: decades (solid) and 2x/5x (faint)
    for t in xt:
        for m, op in ((1, 0.35), (2, 0.12), (5, 0.12)):
            v = t * m
            if v > xt[-1]:
                continue
            out.append(f'<line x1="{px(v):.1f}" y1="{top}" x2="{px(v):.1f}" y2="{top + ph}" stroke="#888" '
                       f'stroke-opacity="{op}"/>')
        out.append(f'<text x="{px(t):.1f}" y="{top + ph + 18}" text-anchor="middle">{_fmt(t)}</text>')
    for t in yt:
        for m, op in ((1, 0.35), (2, 0.12), (5, 0.12)):
            v = t * m
            if v > yt[-1]:
                continue
            out.append(f'<line x1="{left}" y1="{py(v):.1f}" x2="{left + pw}" y2="{py(v):.1f}" stroke="#888" '
                       f'stroke-opacity="{op}"/>')
        out.append(f'<text x="{left - 8}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 18 {top + ph / 2})">'
               f'{escape(ylabel)}</text>')
    for s in series:
        meas = sorted(p for p in s.points if p[0] > 0 and p[1] > 0)
        if len(meas) > 1:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in meas)
            out.append(f'<polyline points="{d}" fill="none" stroke="{s.color}" stroke-width="2"/>')
        if meas and s.extrapolated:
            chain = [meas[-1], *sorted(s.extrapolated)]
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in chain)
            out.append(f'<polyline points="{d}" fill="none" stroke="{s.color}" stroke-width="1.5" '
                       f'stroke-dasharray="5,4"/>')
        for i, (x, y) in enumerate(s.points):
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{s.color}">'
                       f'<title>{escape(s.name)}: {y:.3g} s at {x:,.0f}'
                       f'{" (" + escape(s.labels[i]) + ")" if i < len(s.labels) else ""}</title></circle>')
        for x, y in s.extrapolated:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="white" stroke="{s.color}" '
                       f'stroke-width="1.5"><title>{escape(s.name)} (extrapolated): {y:.3g} s</title></circle>')
    # legend
    ly = top + 8
    for s in series:
        out.append(f'<line x1="{left + pw + 14}" y1="{ly}" x2="{left + pw + 38}" y2="{ly}" stroke="{s.color}" '
                   f'stroke-width="2"/><circle cx="{left + pw + 26}" cy="{ly}" r="3.5" fill="{s.color}"/>')
        out.append(f'<text x="{left + pw + 44}" y="{ly + 4}">{escape(s.name)}</text>')
        ly += 20
    if any(s.extrapolated for s in series):
        out.append(f'<circle cx="{left + pw + 26}" cy="{ly}" r="3.5" fill="white" stroke="#333"/>'
                   f'<text x="{left + pw + 44}" y="{ly + 4}">extrapolated</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
