"""Plots drawn as inline SVG on the server: no JavaScript, no CDN, readable without colour
(every bar carries its number as text and the chart has a title for screen readers)."""

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = ("#0b57d0", "#1a7f37", "#9a6700", "#cf222e", "#8250df", "#57606a")


def funnel_stages(counts: dict) -> list[tuple[str, int]]:
    stages = [("candidates", int(counts.get("candidates", 0)))]
    for step in counts.get("steps", []):
        stages.append((str(step["name"]), int(step["out"])))
    if "train" in counts:
        stages.append(("train", int(counts["train"])))
        stages.append(("eval", int(counts["eval"])))
    return stages


def funnel_svg(counts: dict, *, width: int = 520, compact: bool = False) -> SafeString:
    """Horizontal bars: how many examples survive each step of the pipeline."""
    stages = funnel_stages(counts)
    if not stages or not counts:
        return mark_safe("")
    row = 14 if compact else 24
    label_w = 0 if compact else 110
    num_w = 0 if compact else 70
    bar_w = width - label_w - num_w
    top = max(value for _, value in stages) or 1
    height = row * len(stages) + 4
    parts = [
        f'<svg class="plot funnel" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        "<title>Pipeline funnel: "
        + escape(", ".join(f"{name} {value}" for name, value in stages))
        + "</title>",
    ]
    for index, (name, value) in enumerate(stages):
        y = index * row + 2
        w = max(1, round(bar_w * value / top)) if value else 0
        fill = PALETTE[1] if name in ("train", "eval") else PALETTE[0]
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{w}" height="{row - 4}" fill="{fill}" rx="2">'
            f"<title>{escape(name)}: {value}</title></rect>"
        )
        if not compact:
            parts.append(
                f'<text x="{label_w - 6}" y="{y + row - 9}" text-anchor="end">{escape(name)}</text>'
                f'<text x="{label_w + w + 6}" y="{y + row - 9}">{value}</text>'
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def balance_svg(by_split: dict[str, dict[str, int]], *, width: int = 520) -> SafeString:
    """One stacked bar per split, a segment per label, with a legend."""
    names = sorted({name for split in by_split.values() for name in split})
    if not names:
        return mark_safe("")
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    label_w, row = 60, 26
    bar_w = width - label_w - 10
    splits = [s for s in ("train", "eval") if s in by_split]
    height = row * len(splits) + 24
    desc = "; ".join(
        f"{s}: " + ", ".join(f"{n} {by_split[s].get(n, 0)}" for n in names) for s in splits
    )
    parts = [
        f'<svg class="plot balance" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>Label balance per split: {escape(desc)}</title>",
    ]
    for index, split in enumerate(splits):
        y = index * row + 2
        total = sum(by_split[split].values()) or 1
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{split}</text>')
        x = float(label_w)
        for name in names:
            value = by_split[split].get(name, 0)
            if not value:
                continue
            w = bar_w * value / total
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}" '
                f'fill="{colour[name]}"><title>{escape(name)}: {value} '
                f"({100 * value / total:.0f}%)</title></rect>"
            )
            if w > 40:
                parts.append(f'<text class="on-bar" x="{x + 4:.1f}" y="{y + 15}">{value}</text>')
            x += w
    y = len(splits) * row + 16
    x = label_w
    for name in names:
        parts.append(
            f'<rect x="{x}" y="{y - 10}" width="10" height="10" fill="{colour[name]}"/>'
            f'<text x="{x + 14}" y="{y}">{escape(name)}</text>'
        )
        x += 24 + 8 * len(name)
    parts.append("</svg>")
    return mark_safe("".join(parts))
