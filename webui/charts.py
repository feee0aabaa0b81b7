"""Small server-rendered SVG charts: no JavaScript, no CDN, readable offline and in print.
Colours come from the stylesheet (class names), so the charts follow the page's theme."""
from __future__ import annotations

from markupsafe import Markup, escape

W, H = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28


def _nice_max(n: int) -> int:
    if n <= 5:
        return max(n, 1)
    step = 10 ** (len(str(n)) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if n <= m * step:
            return int(m * step)
    return n


def _frame(ymax: int, ylabel: str) -> list[str]:
    out = []
    for frac in (0, 0.5, 1):
        y = TOP + (H - TOP - BOTTOM) * (1 - frac)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{escape(_fmt(ymax * frac))}</text>')
    out.append(f'<text class="tick" x="10" y="{TOP + 8}" text-anchor="start">{escape(ylabel)}</text>')
    return out


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def histogram(counts: list[int], css: str = "bar", band: tuple | None = None,
              label: str = "p(road)") -> Markup:
    """Bars over [0, 1]; ``band`` shades the routing band; a dashed line marks 0.5."""
    bins = len(counts)
    ymax = _nice_max(max(counts) if counts else 0)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="histogram of {escape(label)}">']
    if band:
        x0, x1 = LEFT + pw * band[0], LEFT + pw * band[1]
        parts.append(f'<rect class="band" x="{x0:.1f}" y="{TOP}" width="{x1 - x0:.1f}" height="{ph}">'
                     f'<title>routing band {band[0]:g}–{band[1]:g}</title></rect>')
    parts += _frame(ymax, "images")
    bw = pw / max(bins, 1)
    for i, n in enumerate(counts):
        h = ph * n / ymax
        lo, hi = i / bins, (i + 1) / bins
        parts.append(f'<rect class="{css}" x="{LEFT + i * bw + 1:.1f}" y="{TOP + ph - h:.1f}" '
                     f'width="{max(bw - 2, 1):.1f}" height="{h:.1f}">'
                     f'<title>{lo:.2f}–{hi:.2f}: {n} images</title></rect>')
    mid = LEFT + pw * 0.5
    parts.append(f'<line class="threshold" x1="{mid:.1f}" x2="{mid:.1f}" y1="{TOP}" y2="{TOP + ph}"/>')
    for t in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text class="tick" x="{LEFT + pw * t:.1f}" y="{H - 8}" '
                     f'text-anchor="middle">{t:g}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def daily_bars(days: list[tuple[str, int]], css: str = "bar-labels") -> Markup:
    """One bar per day (``(YYYY-MM-DD, count)``, oldest first)."""
    n = len(days)
    ymax = _nice_max(max((c for _, c in days), default=0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    bw = pw / max(n, 1)
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="labels per day">']
    parts += _frame(ymax, "labels")
    for i, (day, c) in enumerate(days):
        h = ph * c / ymax
        x = LEFT + i * bw
        parts.append(f'<rect class="{css}" x="{x + 1:.1f}" y="{TOP + ph - h:.1f}" '
                     f'width="{max(bw - 2, 1):.1f}" height="{h:.1f}">'
                     f'<title>{escape(day)}: {c} labels</title></rect>')
        if i % 7 == (n - 1) % 7:
            parts.append(f'<text class="tick" x="{x + bw / 2:.1f}" y="{H - 8}" '
                         f'text-anchor="middle">{escape(day[5:])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def meter(fraction: float | None) -> Markup:
    """A thin horizontal bar for a rate (agreement) or a probability."""
    if fraction is None:
        return Markup('<svg class="meter" viewBox="0 0 100 8"><rect class="meter-bg" x="0" y="0" '
                      'width="100" height="8" rx="4"/></svg>')
    w = max(0.0, min(1.0, fraction)) * 100
    return Markup(f'<svg class="meter" viewBox="0 0 100 8" preserveAspectRatio="none">'
                  f'<rect class="meter-bg" x="0" y="0" width="100" height="8" rx="4"/>'
                  f'<rect class="meter-fg" x="0" y="0" width="{w:.1f}" height="8" rx="4"/></svg>')
