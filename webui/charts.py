"""Small server-rendered SVG charts: no JavaScript, no CDN, readable offline and in print.
Colours come from the stylesheet (class names), so the charts follow the page's theme."""
from __future__ import annotations

from markupsafe import Markup, escape

W, H = 560, 236
# room on the left for tick labels and the rotated y-axis title, below for ticks and the x title
LEFT, RIGHT, TOP, BOTTOM = 58, 24, 14, 44


def _int_ticks(n: int) -> tuple[int, list[int]]:
    """(axis top, tick values) for a count axis: whole numbers only, at most six ticks, the
    top a round number at or above ``n``."""
    n = max(int(n), 1)
    k = 0
    step = 1
    while -(-n // step) > 5:  # steps 1, 2, 5, 10, 20, 50, ...
        k += 1
        step = (1, 2, 5)[k % 3] * 10 ** (k // 3)
    top = -(-n // step) * step
    return top, list(range(0, top + 1, step))


def _axis_titles(x_title: str, y_title: str, left: float, top: float, bottom: float) -> list[str]:
    """The x title centred under the tick labels; the y title rotated, left of the tick labels."""
    mid_y = (top + bottom) / 2
    return [f'<text class="axis-title" x="{(left + W - RIGHT) / 2:.1f}" y="{H - 6}" '
            f'text-anchor="middle">{escape(x_title)}</text>',
            f'<text class="axis-title" x="14" y="{mid_y:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {mid_y:.1f})">{escape(y_title)}</text>']


def _frame(ticks: list[int], top_value: int) -> list[str]:
    out = []
    for v in ticks:
        y = TOP + (H - TOP - BOTTOM) * (1 - v / top_value)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v}</text>')
    return out


def histogram(counts: list[int], css: str = "bar", band: tuple | None = None,
              label: str = "p(road)") -> Markup:
    """Bars over [0, 1]; ``band`` shades the routing band; a dashed line marks 0.5."""
    bins = len(counts)
    ymax, ticks = _int_ticks(max(counts) if counts else 0)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="histogram of {escape(label)}: images per bin">']
    if band:
        x0, x1 = LEFT + pw * band[0], LEFT + pw * band[1]
        parts.append(f'<rect class="band" x="{x0:.1f}" y="{TOP}" width="{x1 - x0:.1f}" height="{ph}">'
                     f'<title>routing band {band[0]:g}–{band[1]:g}</title></rect>')
    parts += _frame(ticks, ymax)
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
        parts.append(f'<text class="tick" x="{LEFT + pw * t:.1f}" y="{TOP + ph + 16}" '
                     f'text-anchor="middle">{t:g}</text>')
    parts += _axis_titles(label, "images", LEFT, TOP, TOP + ph)
    parts.append("</svg>")
    return Markup("".join(parts))


def daily_bars(days: list[tuple[str, int]], css: str = "bar-labels") -> Markup:
    """One bar per day (``(YYYY-MM-DD, count)``, oldest first)."""
    n = len(days)
    ymax, ticks = _int_ticks(max((c for _, c in days), default=0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    bw = pw / max(n, 1)
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="labels per day">']
    parts += _frame(ticks, ymax)
    for i, (day, c) in enumerate(days):
        h = ph * c / ymax
        x = LEFT + i * bw
        parts.append(f'<rect class="{css}" x="{x + 1:.1f}" y="{TOP + ph - h:.1f}" '
                     f'width="{max(bw - 2, 1):.1f}" height="{h:.1f}">'
                     f'<title>{escape(day)}: {c} labels</title></rect>')
        if i % 7 == (n - 1) % 7:
            parts.append(f'<text class="tick" x="{x + bw / 2:.1f}" y="{TOP + ph + 16}" '
                         f'text-anchor="middle">{escape(day[5:])}</text>')
    parts += _axis_titles("day (UTC, month-day)", "labels", LEFT, TOP, TOP + ph)
    parts.append("</svg>")
    return Markup("".join(parts))


def meter(fraction: float | None) -> Markup:
    """A thin horizontal bar for a rate (agreement) or a probability."""
    if fraction is None:
        return Markup('<svg class="meter" viewBox="0 0 100 8" preserveAspectRatio="none">'
                      '<rect class="meter-bg" x="0" y="0" '
                      'width="100" height="8" rx="4"/></svg>')
    w = max(0.0, min(1.0, fraction)) * 100
    return Markup(f'<svg class="meter" viewBox="0 0 100 8" preserveAspectRatio="none">'
                  f'<rect class="meter-bg" x="0" y="0" width="100" height="8" rx="4"/>'
                  f'<rect class="meter-fg" x="0" y="0" width="{w:.1f}" height="8" rx="4"/></svg>')


def _axis_range(values: list[float], lo: float | None, hi: float | None) -> tuple[float, float]:
    """``lo``/``hi`` where given (a fraction lives in [0, 1]); else from the data, from 0 when
    every value is positive (losses), with a little room above."""
    if lo is None:
        lo = min(0.0, min(values, default=0.0))
    if hi is None:
        top = max(values, default=1.0)
        hi = lo + 1.0 if top <= lo else top + (top - lo) * 0.05
    return lo, hi


def _tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 0.01:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.1e}"  # learning rates


def lines(series: list[tuple[str, str, list[tuple[float, float | None]]]], ylabel: str,
          ymin: float | None = None, ymax: float | None = None, mark_x: float | None = None,
          mark_label: str = "", xlabel: str = "epoch") -> Markup:
    """Line chart of ``(name, css class, [(x, y), ...])`` series over a shared x axis (epochs);
    points whose y is missing (or not finite) are skipped. ``mark_x`` draws a dashed vertical
    line (e.g. the best epoch, the one kept). Each point carries a hover title."""
    clean = [(name, css, [(float(x), float(y)) for x, y in pts
                          if y is not None and y == y and abs(float(y)) != float("inf")])
             for name, css, pts in series]
    xs = [x for _, _, pts in clean for x, _ in pts]
    ys = [y for _, _, pts in clean for _, y in pts]
    lo, hi = _axis_range(ys, ymin, ymax)
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 == x0:
        x1 = x0 + 1
    top = TOP + 18  # room for the legend above the plot
    left = LEFT + 4
    pw, ph = W - left - RIGHT, H - top - BOTTOM

    def px(x):
        return left + pw * (x - x0) / (x1 - x0)

    def py(y):
        return top + ph * (1 - (min(max(y, lo), hi) - lo) / (hi - lo))

    parts = [f'<svg class="chart lines" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="{escape(ylabel)} per {escape(xlabel)}">']
    for frac in (0, 0.5, 1):
        y = top + ph * (1 - frac)
        parts.append(f'<line class="grid" x1="{left}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(_tick(lo + (hi - lo) * frac))}</text>')
    span = int(x1 - x0)
    step = max(1, -(-span // 8))
    x = x0
    while x <= x1 + 1e-9:
        parts.append(f'<text class="tick" x="{px(x):.1f}" y="{top + ph + 16:.1f}" text-anchor="middle">'
                     f'{escape(_tick(x))}</text>')
        x += step
    parts += _axis_titles(xlabel, ylabel, left, top, top + ph)
    if mark_x is not None and x0 <= mark_x <= x1:
        parts.append(f'<line class="threshold" x1="{px(mark_x):.1f}" x2="{px(mark_x):.1f}" '
                     f'y1="{top}" y2="{top + ph}"><title>{escape(mark_label or f"{xlabel} {mark_x:g}")}'
                     f'</title></line>')
    for i, (name, css, pts) in enumerate(clean):
        if not pts:
            continue
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline class="line {escape(css)}" points="{coords}"/>')
        for x, y in pts:
            parts.append(f'<circle class="dot {escape(css)}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5">'
                         f'<title>{escape(name)}, {escape(xlabel)} {x:g}: {y:.4g}</title></circle>')
        lx = left + 170 * i
        parts.append(f'<line class="line {escape(css)}" x1="{lx:.1f}" x2="{lx + 16:.1f}" '
                     f'y1="{TOP - 2}" y2="{TOP - 2}"/>'
                     f'<text class="tick legend" x="{lx + 20:.1f}" y="{TOP + 2}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def progress(total: int, done: int, failed: int = 0, what: str = "scored") -> Markup:
    """A bar for a batch: ``done`` in the accent colour, then ``failed`` in red, out of
    ``total``; the rest is still to do. A batch whose files all failed shows a red bar, never
    a full "done" one."""
    if not total:
        return meter(None)
    ok = 100 * max(0, min(done, total)) / total
    bad = 100 * max(0, min(failed, total - done)) / total
    label = f"{done} of {total} {what}" + (f", {failed} failed" if failed else "")
    return Markup(f'<svg class="meter" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" '
                  f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
                  f'<rect class="meter-bg" x="0" y="0" width="100" height="8" rx="4"/>'
                  f'<rect class="meter-fg" x="0" y="0" width="{ok:.1f}" height="8"/>'
                  f'<rect class="meter-fail" x="{ok:.1f}" y="0" width="{bad:.1f}" height="8"/></svg>')
