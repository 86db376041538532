"""Inline SVG charts drawn on the server: no JavaScript library, no CDN."""

import math

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

COLOURS = ("#0b57d0", "#cf222e", "#1a7f37", "#9a6700")


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    *,
    width: int = 640,
    height: int = 220,
    title: str = "",
) -> SafeString:
    """One polyline per named series of (x, y) points, with axis labels and a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return mark_safe('<p class="muted">No points yet.</p>')
    pad_l, pad_r, pad_t, pad_b = 48, 12, 16, 28
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * (height - pad_t - pad_b)

    # Enough decimals that the top, middle and bottom labels differ even on a flat curve.
    decimals = max(0, min(5, 2 - math.floor(math.log10(y1 - y0))))
    middle = (y0 + y1) / 2
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" '
        f'height="{height - pad_t - pad_b}" fill="none" stroke="#d0d7de"/>',
        f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{sy(middle):.1f}" y2="{sy(middle):.1f}" '
        f'stroke="#eaeef2"/>',
        f'<text x="4" y="{pad_t + 10}" font-size="11">{y1:.{decimals}f}</text>',
        f'<text x="4" y="{sy(middle) + 4:.1f}" font-size="11">{middle:.{decimals}f}</text>',
        f'<text x="4" y="{height - pad_b}" font-size="11">{y0:.{decimals}f}</text>',
        f'<text x="{pad_l}" y="{height - 8}" font-size="11">step {x0:g}</text>',
        f'<text x="{width - pad_r - 60}" y="{height - 8}" font-size="11">step {x1:g}</text>',
    ]
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        if len(values) == 1:
            x, y = values[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        else:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
            for x, y in values if len(values) <= 20 else []:
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>')
        parts.append(
            f'<text x="{pad_l + 8 + 110 * index}" y="{pad_t + 14}" font-size="12" '
            f'fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def bar_chart(
    groups: dict[str, dict[str, float]], *, width: int = 640, title: str = ""
) -> SafeString:
    """Grouped horizontal bars: one group per metric, one bar per model, scaled per metric."""
    if not groups:
        return mark_safe('<p class="muted">No metrics yet.</p>')
    models = list(next(iter(groups.values())).keys())
    row, gap, label_w = 16, 14, 130
    height = len(groups) * (row * len(models) + gap) + 24
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    y = 8
    for metric, values in groups.items():
        top = max([abs(v) for v in values.values()] + [1e-9])
        parts.append(f'<text x="0" y="{y + row}" font-size="12">{escape(metric)}</text>')
        for index, model in enumerate(models):
            value = values.get(model, 0.0)
            bar = (width - label_w - 70) * abs(value) / top
            colour = COLOURS[index % len(COLOURS)]
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{bar:.1f}" height="{row - 3}" '
                f'fill="{colour}"><title>{escape(model)}: {value:.4g}</title></rect>'
                f'<text x="{label_w + bar + 4:.1f}" y="{y + row - 5}" font-size="11">'
                f"{value:.4g}</text>"
            )
            y += row
        y += gap
    legend = " ".join(
        f'<tspan fill="{COLOURS[i % len(COLOURS)]}">■ {escape(m)}</tspan>'
        for i, m in enumerate(models)
    )
    parts.append(f'<text x="{label_w}" y="{height - 4}" font-size="12">{legend}</text></svg>')
    return mark_safe("".join(parts))
