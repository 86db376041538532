"""Recorded values as people read them: payloads, configurations and hashes.

Audit payloads, training configurations and environments are JSON; auditors read them on
pages. `readable` renders any such value as text and small definition lists instead of a
Python repr, and `short_hash` shortens a digest while keeping the full value a hover away.
"""

import json
import re
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

HASH_SHOWN = 12
DEEPEST = 4  # nesting shown as lists; anything deeper is shown as compact JSON
_DIGEST = re.compile(r"^(?:sha256:)?[0-9a-f]{32,}$", re.IGNORECASE)


def looks_like_digest(value: Any) -> bool:
    return isinstance(value, str) and bool(_DIGEST.match(value))


@register.filter
def short_hash(value: Any, shown: int = HASH_SHOWN) -> SafeString:
    """A digest as its first characters, the whole one in the title (and copied with it)."""
    text = "" if value is None else str(value)
    if len(text) <= shown:
        return format_html("<code>{}</code>", text)
    return format_html('<code class="hash" title="{}">{}…</code>', text, text[:shown])


@register.filter
def field_label(key: Any) -> str:
    """A recorded key as a label: "guideline_version" reads "guideline version"."""
    return str(key).replace("_", " ").strip()


def _scalar(value: Any) -> SafeString:
    if value is None or value == "":
        return mark_safe('<span class="muted">—</span>')
    if value is True:
        return mark_safe("yes")
    if value is False:
        return mark_safe("no")
    if looks_like_digest(value):
        return short_hash(value)
    return format_html("{}", value)


def _render(value: Any, depth: int) -> SafeString:
    if isinstance(value, dict):
        if not value:
            return mark_safe('<span class="muted">none</span>')
        if depth >= DEEPEST:
            return format_html("<code>{}</code>", json.dumps(value, default=str))
        rows = format_html_join(
            "",
            "<div><dt>{}</dt><dd>{}</dd></div>",
            ((field_label(key), _render(item, depth + 1)) for key, item in value.items()),
        )
        return format_html('<dl class="payload">{}</dl>', rows)
    if isinstance(value, list | tuple):
        if not value:
            return mark_safe('<span class="muted">none</span>')
        if all(not isinstance(item, dict | list | tuple) for item in value):
            return format_html_join(", ", "{}", ((_scalar(item),) for item in value))
        if depth >= DEEPEST:
            return format_html("<code>{}</code>", json.dumps(value, default=str))
        items = format_html_join("", "<li>{}</li>", ((_render(i, depth + 1),) for i in value))
        return format_html('<ol class="payload">{}</ol>', items)
    return _scalar(value)


@register.filter
def readable(value: Any) -> SafeString:
    """A recorded value (dict, list, scalar) as HTML: dicts as definition lists of
    "key: value" lines, nested values inside, lists of plain values joined by commas, digests
    shortened, nothing missing shown as "—"."""
    return _render(value, 0)


@register.filter
def duration_words(seconds: float | None) -> str:
    """A duration in words, rounded as an estimate is: "45 seconds", "12 minutes", "3.5 hours"."""
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        whole = round(seconds)
        return f"{whole} second{'' if whole == 1 else 's'}"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds / 3600:.1f} hours"
