"""Webhooks: lifecycle events sent to configured URLs, signed, retried with backoff.

An event becomes one `WebhookDelivery` row per subscribed webhook, written in the transaction
of the change it reports (so a rolled-back change sends nothing) and handed to the
`deliver_webhook` actor after commit. Each attempt is claimed in the database first, so a
message delivered twice by the broker sends once.

Signature: `X-Signoff-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
`X-Signoff-Timestamp: <unix seconds>`; receivers recompute it and reject old timestamps."""

import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.audit import audit_append
from core.jobs import JobSpec, due_jobs_resend, jobs_due
from core.permissions import can
from governance.errors import GovernanceForbidden, InvalidGovernanceRequest
from monitoring.models import Webhook, WebhookDelivery

log = logging.getLogger(__name__)

EVENTS = tuple(Webhook.Event.values)
SIGNATURE_HEADER = "X-Signoff-Signature"
TIMESTAMP_HEADER = "X-Signoff-Timestamp"


def _conf(key: str) -> Any:
    return settings.SIGNOFF_MONITORING[key]


def _send_delivery(delivery_id: Any) -> None:
    from monitoring.tasks import deliver_webhook

    deliver_webhook.send(delivery_id)


# A delivery is retried on a schedule rather than leased: each attempt claims it by pushing
# next_attempt_at past the request's timeout, so "due" is both "its retry time came" and "the
# attempt that claimed it died". The broker is not asked (no message id is kept): the claim
# makes a second send a no-op.
WEBHOOK_DELIVERY_JOB = JobSpec(
    model=WebhookDelivery,
    audit_as="webhook_delivery",
    queued=WebhookDelivery.Status.PENDING,
    due_field="next_attempt_at",
    enqueue=_send_delivery,
)


def can_configure_webhooks(user: AbstractBaseUser) -> bool:
    return can(user, "webhooks.configure")


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def webhook_signature_valid(
    *, secret: str, timestamp: str, body: bytes, signature: str, tolerance_s: int = 300
) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    expected = webhook_signature(secret=secret, timestamp=timestamp, body=body)
    return age <= tolerance_s and hmac.compare_digest(expected, signature)


def webhook_save(
    *,
    user: AbstractBaseUser,
    name: str,
    url: str,
    events: list[str],
    is_active: bool = True,
    secret: str = "",
    webhook: Webhook | None = None,
) -> Webhook:
    """Create or change a webhook (admins). A new one without a secret gets a random one."""
    if not can_configure_webhooks(user):
        raise GovernanceForbidden("Only admins configure webhooks.")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidGovernanceRequest("A name of 1 to 100 characters.", field="name")
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc or len(url) > 500:
        raise InvalidGovernanceRequest("An http(s) URL.", field="url")
    if not isinstance(events, list) or not events:
        raise InvalidGovernanceRequest(
            f"A list of events from {', '.join(EVENTS)}.", field="events"
        )
    for index, event in enumerate(events):
        if event not in EVENTS:
            raise InvalidGovernanceRequest(
                f"Unknown event {event!r}; known: {', '.join(EVENTS)}.", field=f"events[{index}]"
            )
    if secret and not 16 <= len(secret) <= 128:
        raise InvalidGovernanceRequest("A secret of 16 to 128 characters.", field="secret")
    with transaction.atomic():
        if webhook is None:
            if Webhook.objects.filter(name=name).exists():
                raise InvalidGovernanceRequest(f"A webhook named {name} exists.", field="name")
            webhook = Webhook.objects.create(
                name=name,
                url=url,
                events=sorted(set(events)),
                is_active=is_active,
                secret=secret or secrets.token_hex(32),
                created_by=user,
            )
            action = "webhook.created"
        else:
            webhook = Webhook.objects.select_for_update().get(pk=webhook.pk)
            webhook.name, webhook.url = name, url
            webhook.events, webhook.is_active = sorted(set(events)), is_active
            if secret:
                webhook.secret = secret
            webhook.save()
            action = "webhook.changed"
        audit_append(
            actor=user,
            action=action,
            object_type="webhook",
            object_id=webhook.pk,
            payload={
                "name": name,
                "url": url,
                "events": webhook.events,
                "is_active": is_active,
                "secret_changed": bool(secret) or action == "webhook.created",
            },
        )
    return webhook


def webhook_event_emit(*, event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Queue `event` for every active webhook subscribed to it, inside the caller's
    transaction; the actor is told after commit."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event}")
    hooks = [h for h in Webhook.objects.filter(is_active=True) if event in h.events]
    if not hooks:
        return []
    now = timezone.now()
    body = {"event": event, "sent_for": now.isoformat(), "data": payload}
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(webhook=h, event=event, payload=body, next_attempt_at=now) for h in hooks
    )
    ids = [str(d.pk) for d in deliveries]

    def send() -> None:
        from monitoring.tasks import deliver_webhook

        for delivery_id in ids:
            deliver_webhook.send(delivery_id)

    transaction.on_commit(send)
    return deliveries


def backoff_seconds(attempts: int) -> float:
    """Delay before attempt `attempts + 1`: the base, doubled after each failure."""
    return float(_conf("WEBHOOK_BACKOFF_SECONDS")) * 2 ** max(0, attempts - 1)


def _claim(delivery_id: Any) -> WebhookDelivery | None:
    with transaction.atomic():
        # Locked: two deliveries of the same message must not both send.
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("webhook")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
            return None
        if not delivery.webhook.is_active:
            # Switched off by an admin: its pending deliveries stop here, with the reason.
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                status=WebhookDelivery.Status.FAILED, last_error="webhook deactivated"
            )
            return None
        now = timezone.now()
        if delivery.next_attempt_at > now:
            return None
        # Pushed past the request's timeout: a duplicate message arriving meanwhile waits.
        in_flight = now + timedelta(seconds=float(_conf("WEBHOOK_TIMEOUT_SECONDS")) + 5)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            attempts=delivery.attempts + 1, next_attempt_at=in_flight
        )
        delivery.attempts += 1
        return delivery


def _post(delivery: WebhookDelivery) -> tuple[int | None, str]:
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        delivery.webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Signoff-Webhook/1",
            "X-Signoff-Event": delivery.event,
            "X-Signoff-Delivery": str(delivery.pk),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(
                secret=delivery.webhook.secret, timestamp=timestamp, body=body
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=_conf("WEBHOOK_TIMEOUT_SECONDS")) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return None, str(getattr(exc, "reason", exc))[:500]


def webhook_deliver(*, delivery_id: Any) -> WebhookDelivery | None:
    """One attempt: claim, POST (outside any transaction), record; on failure schedule the
    next attempt with backoff, or give up after WEBHOOK_MAX_ATTEMPTS."""
    delivery = _claim(delivery_id)
    if delivery is None:
        log.info("webhook delivery %s: not due or already done", delivery_id)
        return None
    code, error = _post(delivery)
    now = timezone.now()
    ok = code is not None and 200 <= code < 300
    entry = {"at": now.isoformat(), "attempt": delivery.attempts, "status_code": code}
    if error:
        entry["error"] = error
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        delivery.log = [*delivery.log, entry]
        delivery.last_status_code, delivery.last_error = code, error
        retry_in = None
        if ok:
            delivery.status, delivery.delivered_at = WebhookDelivery.Status.DELIVERED, now
        elif delivery.attempts >= int(_conf("WEBHOOK_MAX_ATTEMPTS")):
            delivery.status = WebhookDelivery.Status.FAILED
        else:
            retry_in = backoff_seconds(delivery.attempts)
            delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        delivery.save()
        if retry_in is not None:
            from monitoring.tasks import deliver_webhook

            ms = int(retry_in * 1000)
            pk = str(delivery.pk)
            transaction.on_commit(lambda: deliver_webhook.send_with_options(args=(pk,), delay=ms))
    return delivery


def webhook_deliveries_due(*, now: Any = None) -> list[str]:
    """Pending deliveries whose time came (a lost message is picked up again by the sweep)."""
    return jobs_due(WEBHOOK_DELIVERY_JOB, now=now or timezone.now())


def webhook_deliveries_resend() -> int:
    """Send again the deliveries that are due but whose broker message was lost; how many."""
    # The delivery claims its attempt in the database, so a message that was not lost after
    # all makes the second send a no-op.
    return len(due_jobs_resend(WEBHOOK_DELIVERY_JOB, now=timezone.now()))
