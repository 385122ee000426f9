"""Charts as server-rendered SVG: runs per bucket by status (stacked bars), and durations
per workflow (paired bars). Colours come from the stylesheet (classes), and every series
has a pattern too, so a chart reads without colour; each chart has a table beside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

STATUSES = ("success", "failed", "not_run", "rejected")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 180, 44, 22, 8
_PATTERNS = """<svg class="defs" width="0" height="0" aria-hidden="true"><defs>
<pattern id="p-failed" width="6" height="6" patternUnits="userSpaceOnUse">
<rect class="s-failed" width="6" height="6"/><path class="hatch" d="M0,6 L6,0"/></pattern>
<pattern id="p-not_run" width="4" height="4" patternUnits="userSpaceOnUse">
<rect class="s-not_run" width="4" height="4"/><circle class="dot" cx="2" cy="2" r="0.8"/>
</pattern>
<pattern id="p-rejected" width="6" height="6" patternUnits="userSpaceOnUse">
<rect class="s-rejected" width="6" height="6"/><path class="hatch" d="M0,0 L6,6 M0,6 L6,0"/>
</pattern></defs></svg>"""
# Once per page (the charts refer to them by id).
PATTERNS = Markup(_PATTERNS)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bar: its label (a time) and the runs it counts by status."""

    label: str
    counts: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.counts.values())


def _scale(top: float) -> float:
    """A round maximum for the axis, at or above `top`."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000,
                 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000):
        if top <= step:
            return float(step)
    return float(top)


def stacked(buckets: Sequence[Bucket], title: str, every: int = 10) -> Markup:
    """Runs by status per bucket; every `every`th bucket is labelled on the axis."""
    top = _scale(max((b.total for b in buckets), default=0) or 1)
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    bar = plot_w / max(len(buckets), 1)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 4}" '
             f'y2="{TOP + plot_h}"/>',
             f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{top:g}</text>',
             f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>']
    for index, bucket in enumerate(buckets):
        x, base = LEFT + index * bar, float(TOP + plot_h)
        for status in STATUSES:
            count: float = bucket.counts.get(status, 0)
            if not count:
                continue
            height = plot_h * count / top
            base -= height
            parts.append(f'<rect class="s-{status}" x="{x + 0.5:.1f}" '
                         f'y="{base:.1f}" width="{max(bar - 1, 0.5):.1f}" '
                         f'height="{height:.1f}"><title>{escape(bucket.label)}: {count} '
                         f'{status}</title></rect>')
        if index % every == 0:
            parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 6}">'
                         f'{escape(bucket.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def durations(rows: Sequence[tuple[str, float | None, float | None]], title: str) -> Markup:
    """p50 and p99 per workflow, as horizontal bars on one scale (ms)."""
    row_h = 22
    height = TOP + row_h * max(len(rows), 1) + BOTTOM
    label_w = 180
    top = _scale(max((p99 or p50 or 0 for _, p50, p99 in rows), default=0) or 1)
    plot_w = WIDTH - label_w - 60
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for index, (name, p50, p99) in enumerate(rows):
        y = TOP + index * row_h
        parts.append(f'<text class="label" x="{label_w - 6}" y="{y + 14}" '
                     f'text-anchor="end">{escape(name[:28])}</text>')
        for offset, value, kind in ((0, p99, "p99"), (0, p50, "p50")):
            if value is None:
                continue
            width = max(plot_w * value / top, 1.0)
            css = "d-p99" if kind == "p99" else "d-p50"
            parts.append(f'<rect class="{css}" x="{label_w + offset}" '
                         f'y="{y + (3 if kind == "p99" else 7)}" width="{width:.1f}" '
                         f'height="{16 if kind == "p99" else 8}"><title>{escape(name)} '
                         f'{kind}: {value:.2f} ms</title></rect>')
        if p99 is not None:
            parts.append(f'<text class="tick" x="{label_w + plot_w * p99 / top + 6:.1f}" '
                         f'y="{y + 14}">{p99:.1f} ms</text>')
    parts.append(f'<text class="tick" x="{label_w}" y="{height - 6}">0</text>'
                 f'<text class="tick" x="{label_w + plot_w}" y="{height - 6}" '
                 f'text-anchor="end">{top:g} ms</text></svg>')
    return Markup("".join(parts))


def timeline_bar(offset: float, took: float, total: float, status: str) -> Markup:
    """One step of a run's timeline: where it started and how long it took, to scale."""
    total = total or 1.0
    x = min(max(offset / total * 100, 0.0), 100.0)
    width = min(max(took / total * 100, 0.4), 100.0 - x if x < 100 else 0.4)
    return Markup(f'<svg class="step-bar" viewBox="0 0 100 10" preserveAspectRatio="none" '
                  f'aria-hidden="true"><rect class="track" width="100" height="10"/>'
                  f'<rect class="s-{escape(status)}" x="{x:.2f}" y="1" width="{width:.2f}" '
                  f'height="8"/></svg>')
