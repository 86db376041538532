"""Durations in the units people wait in: "about 4 min", "2 h 5 min", never "14625 s"."""

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """A number of seconds as a person reads it; blank when it is unknown."""
    if seconds is None or seconds == "":
        return ""
    try:
        seconds = max(0, round(float(seconds)))
    except (TypeError, ValueError):
        return ""
    if seconds < 45:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def duration_since(moment: datetime | None) -> str:
    """How long ago `moment` was, in `duration`'s words; blank when there is no moment."""
    if moment is None:
        return ""
    return duration((timezone.now() - moment).total_seconds())
