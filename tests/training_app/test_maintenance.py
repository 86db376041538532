"""`manage.py run_maintenance`: the periodic upkeep the demo runs every 30 s (and cron in
production) — stale runs, drift, and webhook deliveries whose broker message was lost."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from monitoring import tasks
from monitoring.models import WebhookDelivery
from monitoring.services.webhooks import webhook_save
from training_app.models import Evaluation, TrainingRun
from training_app.services import training_run_create


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


@pytest.fixture
def tries(make_user, make_dataset_version, tiny_base_model, training_dirs):
    """tries(status, queued_for=..., running_for=...): a "Try it" job on a channel, made
    directly (the page and the worker have their own tests)."""
    from serving.models import ChannelTry

    from .governance_helpers import make_channel

    engineer = make_user("ml_engineer")
    run = training_run_create(
        user=engineer,
        dataset_version=make_dataset_version(2, 1),
        hyperparameters={"num_epochs": 1, "batch_size": 4, "lora_r": 4, "lora_alpha": 8},
        enqueue=False,
    )
    channel = make_channel("production")

    def make(status, *, sent_ago, started_ago=None):
        now = timezone.now()
        return ChannelTry.objects.create(
            channel=channel,
            version=run.model_version,
            user=engineer,
            question="How far do you tow?",
            status=status,
            message_id=f"lost-{status}-{sent_ago}",
            enqueued_at=now - sent_ago,
            started_at=None if started_ago is None else now - started_ago,
        )

    return make


@pytest.mark.django_db
def test_it_sends_again_try_jobs_whose_message_was_lost_or_whose_worker_died(
    tries, sent, capsys, django_capture_on_commit_callbacks
):
    from core.models import AuditEvent
    from serving.services.channel_try import channel_try_execute, try_timeout_seconds

    timeout = timedelta(seconds=try_timeout_seconds())
    lost = tries("queued", sent_ago=timedelta(minutes=2))
    just_sent = tries("queued", sent_ago=timedelta(seconds=5))
    dead = tries("running", sent_ago=timeout * 2, started_ago=timeout * 2)
    slow = tries("running", sent_ago=timeout / 2, started_ago=timeout / 2)
    done = tries("done", sent_ago=timeout * 2, started_ago=timeout * 2)
    with django_capture_on_commit_callbacks() as callbacks:
        call_command("run_maintenance")
    out = capsys.readouterr().out
    assert f'"Try it" questions resent: {lost.pk}' in out
    assert f'"Try it" questions taken back: {dead.pk}' in out
    assert len(callbacks) == 2  # two messages sent, once the sweep's transactions committed
    for job, resent in [(lost, True), (just_sent, False), (dead, True), (slow, False)]:
        before = job.message_id
        job.refresh_from_db()
        assert (job.message_id != before) == resent, job
    events = AuditEvent.objects.filter(action="channel_try.message_resent")
    assert sorted(e.object_id for e in events) == sorted([str(lost.pk), str(dead.pk)])
    # Idempotent: the next pass finds the new messages too young to be called lost.
    with django_capture_on_commit_callbacks() as callbacks:
        call_command("run_maintenance")
    assert callbacks == [] and '"Try it"' not in capsys.readouterr().out
    # A message for a finished job (a duplicate arriving late) does nothing.
    assert channel_try_execute(job_id=done.pk).status == "done"
    done.refresh_from_db()
    assert done.status == "done" and done.message_id.startswith("lost-")
