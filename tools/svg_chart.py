"""Small dependency-free SVG charts for the benchmark report (tools/bench_report.py).

Two kinds, enough for ``bench-report.md`` and nothing more: a line chart of named series of
(x, y) points (:func:`line_chart`) and a horizontal bar chart of ratios, each bar with its own
target mark and a line at ratio 1 (:func:`bar_chart`). Both have axes with "nice" ticks (steps
of 1, 2 or 5 times a power of ten), labels and a legend, and return the SVG document as text.

Degenerate input draws a chart rather than failing: one point, values all equal (the axis is
widened around them), an empty series (in the legend, marked "no data", with no line), no data
at all (empty axes saying so). matplotlib would do all of this and more, but the report is
written by ``make bench`` on a machine that has only the project's dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

SVG_NS = "http://www.w3.org/2000/svg"
# Okabe and Ito's palette: told apart by colour-blind readers too.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MET, MISSED, NO_TARGET = "#2e7d32", "#c62828", "#9e9e9e"
FONT = 12
CHAR_W = 6.6  # mean width of a character at FONT px in a sans-serif face, to size margins
TICKS = 5  # about this many ticks per axis: enough to read a value, few enough to stay legible
MAX_LABEL = 64  # characters of a bar's label; longer ones are cut with an ellipsis
PLOT_W = 480  # the bar chart's plot width: its labels' margin widens the chart, not narrows this


@dataclass(frozen=True)
class Scale:
    """A linear map from a value domain ``[lo, hi]`` to a pixel range ``[start, end]``; a
    domain of zero width maps everything to the range's middle (no division by zero)."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        """The pixel coordinate of ``value``."""
        if self.hi == self.lo:
            return (self.start + self.end) / 2
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def nice_step(width: float, count: int = TICKS) -> float:
    """A step of 1, 2 or 5 times a power of ten that cuts ``width`` into about ``count``."""
    if width <= 0 or not math.isfinite(width):
        return 1.0
    raw = width / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)


def padded(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` widened when empty (all values equal): by a tenth of the value around it,
    or to ``(0, 1)`` at zero (counts that are all zero: no negative axis), so the axis still
    has a scale and its ticks."""
    if hi > lo:
        return lo, hi
    if lo == 0:
        return 0.0, 1.0
    margin = abs(lo) * 0.1
    return lo - margin, hi + margin


def nice_ticks(lo: float, hi: float, count: int = TICKS, *, integer: bool = False) -> list[float]:
    """Ticks at multiples of a nice step, the first at or below ``lo``, the last at or above
    ``hi`` (so they also give the axis's ends); ``lo == hi`` is widened first. ``integer``:
    whole steps only (rounds, worker counts: no tick at round 1.5)."""
    lo, hi = padded(lo, hi)
    step = nice_step(hi - lo, count)
    if integer:
        step = max(step, 1.0)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    # round(): 0.1 * 3 is 0.30000000000000004, which would print as such
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as the step needs, thousands separated, no "-0"."""
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    text = f"{value:,.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text.replace(",", "")) == 0 else text


def short(label: str, limit: int = MAX_LABEL) -> str:
    """``label`` cut to ``limit`` characters, with an ellipsis when cut."""
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def text(x: float, y: float, content: str, **attributes: str | float) -> str:
    """A ``<text>`` element, its content escaped."""
    return f"<text {attrs(x=x, y=y, **attributes)}>{escape(content)}</text>"


def attrs(**attributes: str | float) -> str:
    """XML attributes (``font_size`` becomes ``font-size``), values quoted and escaped; numbers
    to two decimals."""
    parts = []
    for name, value in attributes.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        # class_ for the reserved word: trailing underscores go, inner ones become hyphens
        parts.append(f"{name.rstrip('_').replace('_', '-')}={quoteattr(shown)}")
    return " ".join(parts)


def document(title: str, width: int, height: int, body: list[str]) -> str:
    """A standalone SVG document with a title (shown as a tooltip and read by screen readers)."""
    head = (
        f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{FONT}">'
    )
    return "\n".join(
        [
            head,
            f"<title>{escape(title)}</title>",
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
            text(width / 2, 20, title, text_anchor="middle", font_size=14, font_weight="bold"),
            *body,
            "</svg>\n",
        ]
    )


def legend(entries: Sequence[tuple[str, str, str]], x: float, y: float) -> list[str]:
    """A legend: one row per (label, colour, shape) where shape is "line", "box" or "dash"."""
    body = ['<g class="legend">']
    for i, (label, colour, shape) in enumerate(entries):
        row = y + i * 18
        if shape == "box":
            body.append(f"<rect {attrs(x=x, y=row - 9, width=14, height=10, fill=colour)}/>")
        else:
            dash = {"stroke_dasharray": "4 3"} if shape == "dash" else {}
            body.append(
                f"<line {attrs(x1=x, y1=row - 4, x2=x + 14, y2=row - 4, stroke=colour)} "
                f"{attrs(stroke_width=2, **dash)}/>"
            )
        body.append(text(x + 20, row, label))
    body.append("</g>")
    return body


def line_chart(
    title: str,
    series: Mapping[str, Sequence[Sequence[float]]],
    *,
    x_label: str,
    y_label: str,
    width: int = 720,
    height: int = 380,
    include_zero: bool = True,
) -> str:
    """A line chart: one polyline with point markers per series, in the legend's order.

    The y axis starts at zero when ``include_zero`` (and all values are positive): a 3 %
    difference between two lines then looks like one. Points are sorted by x.
    """
    left, right, top, bottom = 70.0, 190.0, 40.0, 55.0
    points = {name: sorted((float(p[0]), float(p[1])) for p in pts) for name, pts in series.items()}
    xs = [x for pts in points.values() for x, _ in pts]
    ys = [y for pts in points.values() for _, y in pts]
    y_lo, y_hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if include_zero:
        y_lo, y_hi = min(y_lo, 0.0), max(y_hi, 0.0)
    whole = all(x.is_integer() for x in xs)
    x_ticks = nice_ticks(*((min(xs), max(xs)) if xs else (0.0, 1.0)), integer=whole)
    y_ticks = nice_ticks(y_lo, y_hi)
    sx = Scale(x_ticks[0], x_ticks[-1], left, width - right)
    sy = Scale(y_ticks[0], y_ticks[-1], height - bottom, top)
    body = axes(sx, sy, x_ticks, y_ticks, x_label=x_label, y_label=y_label)
    if not ys:
        body.append(text((sx.start + sx.end) / 2, (sy.start + sy.end) / 2, "no data"))
    entries = []
    for i, (name, pts) in enumerate(points.items()):
        colour = PALETTE[i % len(PALETTE)]
        entries.append((short(name, 24) + ("" if pts else " (no data)"), colour, "line"))
        if not pts:
            continue
        body.append(f'<g class="series" data-name={quoteattr(name)}>')
        coords = " ".join(f"{sx(x):.2f},{sy(y):.2f}" for x, y in pts)
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        body.extend(f"<circle {attrs(cx=sx(x), cy=sy(y), r=3, fill=colour)}/>" for x, y in pts)
        body.append("</g>")
    body.extend(legend(entries, width - right + 20, top + 10))
    return document(title, width, height, body)


def axes(
    sx: Scale, sy: Scale, x_ticks: list[float], y_ticks: list[float], *, x_label: str, y_label: str
) -> list[str]:
    """Both axes with their ticks, tick labels, grid lines and titles (the x axis at the plot's
    bottom, whichever way ``sy`` runs)."""
    base, ceiling = max(sy.start, sy.end), min(sy.start, sy.end)
    body = ['<g class="axes" stroke="#444444">']
    body.append(f"<line {attrs(x1=sx.start, y1=base, x2=sx.end, y2=base)}/>")
    body.append(f"<line {attrs(x1=sx.start, y1=base, x2=sx.start, y2=ceiling)}/>")
    body.append("</g>")
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    body.append('<g class="x-ticks">')
    for value in x_ticks:
        x = sx(value)
        body.append(f"<line {attrs(x1=x, y1=base, x2=x, y2=base + 5, stroke='#444444')}/>")
        body.append(text(x, base + 18, tick_label(value, x_step), text_anchor="middle"))
    body.append("</g>")
    body.append('<g class="y-ticks">')
    for value in y_ticks:
        y = sy(value)
        body.append(f"<line {attrs(x1=sx.start, y1=y, x2=sx.end, y2=y, stroke='#e0e0e0')}/>")
        body.append(f"<line {attrs(x1=sx.start - 5, y1=y, x2=sx.start, y2=y, stroke='#444444')}/>")
        body.append(text(sx.start - 8, y + 4, tick_label(value, y_step), text_anchor="end"))
    body.append("</g>")
    middle_x, middle_y = (sx.start + sx.end) / 2, (sy.start + sy.end) / 2
    body.append(text(middle_x, base + 40, x_label, text_anchor="middle", class_="x-label"))
    body.append(
        text(
            16,
            middle_y,
            y_label,
            text_anchor="middle",
            transform=f"rotate(-90 16 {middle_y:.2f})",
            class_="y-label",
        )
    )
    return body


@dataclass(frozen=True)
class Bar:
    """One bar of :func:`bar_chart`: its label, value, target mark (None: no target) and
    whether the target is met (None: no target, drawn grey)."""

    label: str
    value: float
    target: float | None = None
    met: bool | None = None


def bar_chart(title: str, bars: Sequence[Bar], *, x_label: str, reference: float = 1.0) -> str:
    """Horizontal bars, one per :class:`Bar` (labels read left of them), coloured by met, each
    with a black mark at its target, and a dashed line at ``reference`` (parity: ratio 1)."""
    row, top, bottom, right = 26.0, 40.0, 95.0, 70.0
    longest = max((len(short(b.label)) for b in bars), default=0)
    left = max(90.0, longest * CHAR_W + 16)
    width = int(left + PLOT_W + right)
    height = int(top + bottom + row * max(len(bars), 1))
    values = [b.value for b in bars] + [b.target for b in bars if b.target is not None]
    # Headroom past the longest bar for its value's label ("0.950x", about 45 px).
    high = max([0.0, reference, *values])
    ticks = nice_ticks(min([0.0, reference, *values]), high + abs(high) * 0.12)
    sx = Scale(ticks[0], ticks[-1], left, width - right)
    sy = Scale(0, max(len(bars), 1), top, height - bottom)
    body = axes(sx, sy, ticks, [], x_label=x_label, y_label="")
    if not bars:
        body.append(text((sx.start + sx.end) / 2, (sy.start + sy.end) / 2, "no data"))
    for i, bar in enumerate(bars):
        y = sy(i) + 4
        colour = NO_TARGET if bar.met is None else MET if bar.met else MISSED
        x0, x1 = sorted((sx(0.0), sx(bar.value)))
        body.append(f'<g class="bar" data-label={quoteattr(bar.label)}>')
        body.append(text(left - 8, y + 13, short(bar.label), text_anchor="end"))
        body.append(f"<rect {attrs(x=x0, y=y, width=x1 - x0, height=row - 8, fill=colour)}/>")
        # The value's label right of the bar and of its target mark, whichever ends later.
        tx = sx(bar.target) if bar.target is not None else x1
        body.append(text(max(x1, tx) + 6, y + 13, f"{bar.value:.3f}x", font_size=11))
        if bar.target is not None:
            mark = attrs(x1=tx, y1=y - 3, x2=tx, y2=y + row - 5, stroke="#000000", stroke_width=3)
            body.append(f'<line class="target" {mark}/>')
        body.append("</g>")
    rx = sx(reference)
    parity = attrs(x1=rx, y1=sy.start, x2=rx, y2=sy.end, stroke="#555555", stroke_dasharray="5 4")
    body.append(f'<line class="reference" {parity}/>')
    entries = [
        ("target met", MET, "box"),
        ("target not met", MISSED, "box"),
        ("no target (for the record)", NO_TARGET, "box"),
        ("target", "#000000", "line"),
        (f"ratio {reference:g} (parity)", "#555555", "dash"),
    ]
    body.extend(legend(entries[:3], left, height - 38))
    body.extend(legend(entries[3:], left + 260, height - 38))
    return document(title, width, height, body)
