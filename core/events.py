"""Domain events: an app announces what happened ("version.approved") without knowing who
acts on it. Monitoring subscribes its webhooks (monitoring/apps.py), so governance, which
raises the events, never imports monitoring.

Handlers run synchronously inside the caller's transaction: what they write (a webhook
delivery row) commits or rolls back with the change the event records."""

from collections.abc import Callable
from typing import Any

EventHandler = Callable[..., Any]

_handlers: list[EventHandler] = []


def event_subscribe(handler: EventHandler) -> None:
    """Call `handler(event=..., payload=...)` for every event published from now on (once,
    however often an app's ready() runs)."""
    if handler not in _handlers:
        _handlers.append(handler)


def event_publish(*, event: str, payload: dict[str, Any]) -> None:
    for handler in list(_handlers):
        handler(event=event, payload=payload)
