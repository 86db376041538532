"""`manage.py run_maintenance`: the periodic upkeep the demo runs every 30 s (and cron in
production) — stale runs, drift, and webhook deliveries whose broker message was lost."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from training_app import tasks
from training_app.models import Evaluation, TrainingRun, WebhookDelivery
from training_app.services import training_run_create
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
    assert capsys.readouterr().out == "maintenance: 1 webhook deliveries sent again\n"


@pytest.mark.django_db
def test_it_is_quiet_when_there_is_nothing_to_do(personas, sent, capsys):
    call_command("run_maintenance")
    assert sent == []
    assert capsys.readouterr().out == ""


@pytest.mark.django_db
def test_it_sends_again_the_jobs_whose_broker_message_was_lost(
    make_user, make_dataset_version, tiny_base_model, training_dirs, sent, capsys
):
    """A run queued two minutes ago whose message never reached the broker (on_commit does not
    run in this test: the same as a broker down at commit time), and an evaluation whose worker
    went silent: one maintenance pass puts both back on the way to a worker."""
    run = training_run_create(
        user=make_user("ml_engineer"),
        dataset_version=make_dataset_version(2, 1),
        hyperparameters={"num_epochs": 1, "batch_size": 4, "lora_r": 4, "lora_alpha": 8},
    )
    two_minutes_ago = timezone.now() - timedelta(minutes=2)
    TrainingRun.objects.filter(pk=run.pk).update(enqueued_at=two_minutes_ago)
    first_message = TrainingRun.objects.get(pk=run.pk).message_id
    evaluation = Evaluation.objects.create(
        version=run.model_version,
        dataset_version=run.dataset_version,
        status="running",
        lease_owner="host:1:2:gone",
        heartbeat_at=timezone.now() - timedelta(hours=1),
        attempts=1,
    )
    call_command("run_maintenance")
    out = capsys.readouterr().out
    assert f"training runs resent: {run.pk}" in out
    assert f"evaluations requeued: {evaluation.pk}" in out
    run.refresh_from_db()
    assert run.status == "queued" and run.message_id != first_message
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.lease_owner) == ("queued", "")
    assert evaluation.message_id
