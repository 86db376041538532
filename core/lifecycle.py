"""Every status change of a lifecycle model, in one function: checked against the model's
transition table, applied as a compare-and-set, audited in the same transaction when asked.

A lifecycle model declares `TRANSITIONS` next to its `Status` choices: from-status -> the set
of statuses it may move to (a terminal status maps to an empty set). `transition()` is the only
reader of that table, so a move the table does not name cannot happen, whoever asks.

Core is the lowest layer and must not import `reviews`, where the audit chain lives, so the
caller hands in the audit writer (`audit=audit_append`). An argument rather than a writer that
reviews registers from its AppConfig.ready(): the dependency stays visible at each call site,
nothing depends on app-loading order or on process-wide state, and a test passes its own writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.db import models, transaction
from django.utils import timezone

LifecycleModel = TypeVar("LifecycleModel", bound=models.Model)

# audit_append's keywords: actor, action, object_type, object_id, payload.
AuditWriter = Callable[..., object]


def allowed_moves(model: type[models.Model], frm: str) -> set[str]:
    """The statuses the model's table lets `frm` move to (none for a status it does not name)."""
    return set(model.TRANSITIONS.get(frm, ()))  # type: ignore[attr-defined]


def transition(
    obj: LifecycleModel,
    to: str,
    *,
    refused: Callable[[str, str], Exception],
    changed: Callable[[str], Exception],
    frm: str | None = None,
    where: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any] | None = None,
    touch: Iterable[str] = (),
    refresh: bool = False,
    audit: AuditWriter | None = None,
    audit_as: str = "",
    actor: Any = None,
    payload: Mapping[str, Any] | Callable[[LifecycleModel], Mapping[str, Any]] | None = None,
) -> LifecycleModel:
    """Move `obj` from `frm` (default: its status as read) to `to`, setting `fields` with it.

    - `refused(frm, to)` builds the error raised when the table has no such move;
      `changed(frm)` the one raised when the row is no longer in `frm` (or no longer matches
      `where`, e.g. `{"lease_owner": owner}`): someone else got there first. Each app passes
      its own error class and message, so callers and API answers see what they always saw.
    - `touch` names columns set to now in the database only (Output's `updated_at`); the
      object keeps the value it was read with.
    - The object gets the new status and the plain values of `fields`; an expression such as
      `F("attempts") + 1` is not copied, so pass `refresh=True` when the caller reads it.
    - With `audit`, one event `{audit_as}.{to}` on (`audit_as`, obj.pk) with payload
      `{"from": frm, "to": to, **payload}` is written in the transaction of the update;
      `payload` may be a function of the updated object (e.g. to record the new attempt).

    Nothing is written when the move is refused or lost. The error is raised outside the
    inner atomic block so a caller that expects to lose a race may catch it and carry on in
    its own transaction.
    """
    model = type(obj)
    frm = obj.status if frm is None else frm  # type: ignore[attr-defined]
    if to not in allowed_moves(model, frm):
        raise refused(str(frm), str(to))
    now = timezone.now()
    values = {**{column: now for column in touch}, **(fields or {})}
    # savepoint=False: no extra queries inside the caller's transaction; on its own it opens one
    # so the update and its audit event commit together.
    with transaction.atomic(savepoint=False):
        query = model._default_manager.filter(pk=obj.pk, status=frm, **(where or {}))
        won = query.update(status=to, **values) == 1
        if won:
            _apply(obj, to, fields or {}, refresh=refresh)
            if audit is not None:
                extra = payload(obj) if callable(payload) else payload
                audit(
                    actor=actor,
                    action=f"{audit_as}.{to}",
                    object_type=audit_as,
                    object_id=obj.pk,
                    payload={"from": frm, "to": to, **(extra or {})},
                )
    if not won:
        raise changed(str(frm))
    return obj


def _apply(obj: models.Model, to: str, fields: Mapping[str, Any], *, refresh: bool) -> None:
    if refresh:
        obj.refresh_from_db()
        return
    obj.status = to  # type: ignore[attr-defined]
    for name, value in fields.items():
        if not hasattr(value, "resolve_expression"):
            setattr(obj, name, value)
