"""Template filters of the reviewer workbench."""

import json
import re
from functools import lru_cache

import markdown as markdown_lib
import nh3
from django import template
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# Guidelines are written by leads but shown to everyone: sanitise whatever Markdown lets
# through (raw HTML included). No images: an <img> pointing elsewhere would make every
# reviewer's browser call a third party.
GUIDELINE_TAGS = nh3.ALLOWED_TAGS - {"img", "area", "map"}
_HEADING = re.compile(r"<(/?)h([1-6])\b")


def _demote_headings(html: str, levels: int) -> str:
    # The guidelines sit in a side panel under the page's own h1/h2: their "# Title" must not
    # compete with the page's outline.
    return _HEADING.sub(lambda m: f"<{m.group(1)}h{min(6, int(m.group(2)) + levels)}", html)


@lru_cache(maxsize=64)
def _render_markdown(text: str) -> str:
    # Cached: a queue's guidelines are the same text for every item of the queue, and they are
    # re-rendered on every claim.
    html = markdown_lib.markdown(text, extensions=["sane_lists"], output_format="html")
    return nh3.clean(_demote_headings(html, 2), tags=GUIDELINE_TAGS)


@register.filter
def markdown_safe(text: str | None) -> SafeString:
    """Markdown to sanitised HTML."""
    return mark_safe(_render_markdown(text or ""))  # sanitised by nh3 in _render_markdown


@register.filter
def as_text(value: object) -> str:
    """A metadata value as a reader expects it: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@register.filter
def chat_messages(value: object) -> list[dict[str, str]] | None:
    """The input as chat messages ({role, content}), or None when it is plain text."""
    if not isinstance(value, list):
        return None
    messages = []
    for message in value:
        if not isinstance(message, dict):
            return None
        messages.append(
            {"role": str(message.get("role", "")), "content": as_text(message.get("content", ""))}
        )
    return messages


@register.filter
def lease_seconds_left(lease: object, now: object) -> int:
    """Whole seconds left on a lease at `now` (never negative)."""
    left = (lease.expires_at - now).total_seconds()  # type: ignore[attr-defined, operator]
    return max(0, int(left))


@register.filter
def minutes_seconds(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


PAST_TENSE = {"approve": "Approved", "correct": "Corrected", "reject": "Rejected"}


@register.filter
def decided(decision: str) -> str:
    """'approve' -> 'Approved', for the line confirming a decision."""
    return PAST_TENSE.get(decision, f"{decision.capitalize()}d")


@register.filter
def diff_html(chunks: list[list[str]] | None) -> SafeString:
    """A stored word diff ([op, original, corrected] chunks) as text with <del> and <ins>."""
    parts = []
    for op, original, corrected in chunks or []:
        if op == "equal":
            parts.append(conditional_escape(original))
            continue
        if original:
            parts.append(format_html("<del>{}</del>", original))
        if corrected:
            parts.append(format_html("<ins>{}</ins>", corrected))
    return mark_safe("".join(parts))  # every piece escaped above


@register.filter
def entries(mapping: object) -> list[tuple[str, object]]:
    """A dict's items, sorted. (`.items` in a template would look up a key named "items".)"""
    if not isinstance(mapping, dict):
        return []
    return sorted(mapping.items(), key=lambda item: str(item[0]))
