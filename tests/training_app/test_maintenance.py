"""`manage.py run_maintenance`: the periodic upkeep the demo runs every 30 s (and cron in
production) — stale runs, drift, and webhook deliveries whose broker message was lost."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from training_app import tasks
from training_app.models import WebhookDelivery
from training_app.services.webhooks import webhook_save


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(tasks.deliver_webhook, "send", lambda *args: calls.append(args))
    return calls


@pytest.mark.django_db
def test_it_resends_only_deliveries_whose_time_came(personas, sent, capsys):
    hook = webhook_save(
        user=personas["admin"],
        name="ops",
        url="http://127.0.0.1:9/hook",
        events=["drift.alert"],
        secret="a-secret-long-enough",
    )
    now = timezone.now()
    due = WebhookDelivery.objects.create(
        webhook=hook, event="drift.alert", next_attempt_at=now - timedelta(seconds=5)
    )
    WebhookDelivery.objects.create(
        webhook=hook, event="drift.alert", next_attempt_at=now + timedelta(minutes=5)
    )
    WebhookDelivery.objects.create(
        webhook=hook,
        event="drift.alert",
        next_attempt_at=now - timedelta(minutes=5),
        status=WebhookDelivery.Status.DELIVERED,
    )
    call_command("run_maintenance")
    assert sent == [(str(due.pk),)]
    assert "'webhooks_resent': 1" in capsys.readouterr().out


@pytest.mark.django_db
def test_it_is_quiet_when_there_is_nothing_to_do(personas, sent, capsys):
    call_command("run_maintenance")
    assert sent == []
    assert capsys.readouterr().out == ""
