"""Charts drawn on the server as inline SVG: bars of GPUs and stacked columns of GPU-hours.

No script draws anything: a page is complete as the server sends it, a live update swaps the
markup, and the browser tests read the numbers from the same elements a person sees. Colours
come from the stylesheet (classes), never from inline styles, so the pages keep a strict
Content-Security-Policy. Every shape has a `<title>`: hovering it says what it is in numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Marker", "Segment", "bar", "columns"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One part of a bar: `value` in the bar's unit, drawn with CSS class `seg-<kind>`."""

    value: float
    kind: str
    title: str


@dataclass(frozen=True, slots=True)
class Marker:
    """A tick across a bar at `value` (a quota, a fair share, a limit): class `mark-<kind>`."""

    value: float
    kind: str
    title: str


def _n(value: float) -> str:
    """A coordinate, short: `12`, `12.5`."""
    text = f"{value:.1f}"
    return text.removesuffix(".0")


def bar(
    segments: Sequence[Segment],
    *,
    scale: float,
    markers: Sequence[Marker] = (),
    width: int = 320,
    height: int = 14,
    label: str = "",
) -> Markup:
    """Segments laid end to end on a bar `width` pixels long for `scale` units, and markers.

    Segments past the scale are cut at the bar's end (the numbers are in the titles and the
    table beside the bar); a zero or negative scale draws an empty bar.
    """
    unit = width / scale if scale > 0 else 0.0
    parts = [
        f'<svg class="bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}">',
        f'<rect class="bar-bg" width="{width}" height="{height}"/>',
    ]
    x = 0.0
    for segment in segments:
        w = min(segment.value * unit, width - x)
        if w <= 0:
            continue
        parts.append(
            f'<rect class="seg-{escape(segment.kind)}" x="{_n(x)}" width="{_n(w)}" '
            f'height="{height}"><title>{escape(segment.title)}</title></rect>'
        )
        x += w
    for marker in markers:
        mx = min(max(marker.value * unit, 1.0), width - 1.0)
        parts.append(
            f'<line class="mark-{escape(marker.kind)}" x1="{_n(mx)}" x2="{_n(mx)}" y1="0" '
            f'y2="{height}"><title>{escape(marker.title)}</title></line>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _amount(value: float) -> str:
    """A column part's amount in its title: two decimals, or two significant digits if tiny."""
    return f"{value:.2g}" if 0 < abs(value) < 0.01 else f"{value:.2f}"


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is at least `value` (an axis' top)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1.0, 2.0, 2.5, 5.0, 10.0) if step * power >= value)


def columns(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    unit: str,
    width: int = 760,
    height: int = 260,
) -> Markup:
    """Stacked columns: one per label, one coloured part per series (class `col-<i mod 8>`).

    `series` is (name, one value per label); the y axis starts at 0 and ends at a round number
    above the tallest column, with four grid lines. Labels are thinned to fit under the axis.
    """
    left, bottom, top = 56, 22, 24
    plot_w, plot_h = width - left - 8, height - bottom - top
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    ceiling = _nice_ceiling(max(totals, default=0.0))
    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(unit)} per period">'
    ]
    for i in range(5):
        value = ceiling * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{_n(y)}" y2="{_n(y)}"/>'
            f'<text class="axis" x="{left - 6}" y="{_n(y + 4)}" text-anchor="end">'
            f"{value:.4g}</text>"
        )
    if labels:
        slot = plot_w / len(labels)
        gap = min(4.0, slot * 0.2)
        every = max(1, math.ceil(len(labels) * 70 / plot_w))
        for i, label in enumerate(labels):
            x = left + i * slot + gap / 2
            y = top + plot_h
            for k, (name, values) in enumerate(series):
                h = plot_h * values[i] / ceiling
                if h <= 0:
                    continue
                y -= h
                parts.append(
                    f'<rect class="col-{k % 8}" x="{_n(x)}" y="{_n(y)}" width="{_n(slot - gap)}" '
                    f'height="{_n(h)}"><title>{escape(label)}: {escape(name)} '
                    f"{_amount(values[i])} {escape(unit)}</title></rect>"
                )
            if i % every == 0:
                parts.append(
                    f'<text class="axis" x="{_n(x + (slot - gap) / 2)}" y="{height - 6}" '
                    f'text-anchor="middle">{escape(label)}</text>'
                )
    parts.append(
        f'<text class="axis" x="4" y="12">{escape(unit)}</text>'
        f'<line class="axis-line" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}"/></svg>'
    )
    return Markup("".join(parts))
