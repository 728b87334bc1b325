"""The charts of the weekly report and the console, drawn as inline SVG on the server: no script,
no library, nothing fetched, so they show the same offline, in a mail and in a browser."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

FAMILIES = ("content", "conduct", "flood", "deadline", "member", "group", "sanction")
COLOURS = dict(zip(FAMILIES, ("#d62728", "#9467bd", "#ff7f0e", "#1f77b4", "#2ca02c", "#8c564b", "#e377c2"),
                   strict=True))
WEEKDAYS = ("一", "二", "三", "四", "五", "六", "日")  # ISO weekday 1–7, Monday first


def bars(per_day: Sequence[tuple[str, Mapping[str, int]]]) -> str:
    """Stacked bars per day (ISO date) and rule family."""
    top = max((sum(c.values()) for _, c in per_day), default=0) or 1
    step = 80 if len(per_day) <= 7 else max(16, 560 // max(1, len(per_day)))
    bar = int(step * 0.75)
    width, height = max(560, step * len(per_day) + 20), 200
    out = [f'<svg width="{width}" height="{height + 55}" role="img" aria-label="findings per day">']
    for i, (day, counts) in enumerate(per_day):
        y = float(height)
        for family in FAMILIES:
            n = counts.get(family, 0)
            if n:
                h = n / top * height
                y -= h
                out.append(f'<rect x="{i * step + 10}" y="{y:.1f}" width="{bar}" height="{h:.1f}" '
                           f'fill="{COLOURS[family]}"><title>{day} {family}: {n}</title></rect>')
        if step >= 40 or i % 2 == 0:
            out.append(f'<text x="{i * step + 10}" y="{height + 15}" font-size="11">{day[5:]}</text>'
                       f'<text x="{i * step + 10}" y="{height + 30}" font-size="11">{sum(counts.values())}</text>')
    legend = " ".join(f'<tspan fill="{COLOURS[f]}">■ {f}</tspan>' for f in FAMILIES)
    out.append(f'<text x="10" y="{height + 50}" font-size="11">{legend}</text></svg>')
    return "".join(out)


def heatmap(cells: Mapping[tuple[int, int], int]) -> str:
    """Findings per (ISO weekday 1–7, hour 0–23): one row per weekday, one column per hour."""
    top = max(cells.values(), default=0) or 1
    size, left, topm = 22, 28, 16
    out = [f'<svg width="{left + 24 * size + 10}" height="{topm + 7 * size + 10}" role="img" '
           'aria-label="findings by weekday and hour">']
    out += [f'<text x="{left + h * size + 4}" y="12" font-size="10">{h}</text>' for h in range(0, 24, 3)]
    for wd in range(1, 8):
        y = topm + (wd - 1) * size
        out.append(f'<text x="4" y="{y + 15}" font-size="12">{WEEKDAYS[wd - 1]}</text>')
        for h in range(24):
            n = cells.get((wd, h), 0)
            shade = 255 - int(200 * n / top) if n else 245
            out.append(f'<rect x="{left + h * size}" y="{y}" width="{size - 2}" height="{size - 2}" '
                       f'fill="rgb(255,{shade},{shade})"><title>周{WEEKDAYS[wd - 1]} {h:02d}:00 · {n}</title></rect>')
    out.append("</svg>")
    return "".join(out)


def escape(v: object) -> str:
    return html.escape(str(v))
