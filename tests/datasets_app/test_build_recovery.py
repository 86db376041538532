"""Builds whose message or worker vanished are taken back by dataset_builds_recover (issue 9:
the database is the source of truth; a sweeper re-sends what the broker lost)."""

from datetime import timedelta

import dramatiq
import pytest
from django.utils import timezone

from core.models import AuditEvent
from datasets_app import services
from datasets_app.models import DatasetVersion
from datasets_app.services import builds, leases
from datasets_app.tasks import build_dataset_version

pytestmark = pytest.mark.django_db

RESEND = timedelta(seconds=services.BUILD_RESEND_AFTER_S + 1)
STALE = timedelta(seconds=services.BUILD_STALE_AFTER_S + 1)


@pytest.fixture
def broker():
    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()


@pytest.fixture
def outputs(resolved):
    return [resolved(f"Question {n} about the wording of clause {n * 7}?") for n in range(6)]


def queued_ids(broker) -> list[int]:
    queue = broker.queues["datasets"]
    messages = []
    while not queue.empty():
        messages.append(dramatiq.Message.decode(queue.get()))
    assert all(m.actor_name == "build_dataset_version" for m in messages)
    return [m.args[0] for m in messages]


def recover(capture, now):
    # The sweeper sends after commit; the test's transaction never commits, so run them here.
    with capture(execute=True):
        return services.dataset_builds_recover(now=now)


def test_a_lost_message_is_sent_again_and_the_build_completes_once(
    outputs, engineer, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        version = services.dataset_version_enqueue(user=engineer, name="support", seed=1)
    assert queued_ids(broker) == [version.pk]  # ... and then Redis restarts, empty
    now = timezone.now()
    assert recover(django_capture_on_commit_callbacks, now) == {"resent": [], "failed": []}
    assert recover(django_capture_on_commit_callbacks, now + RESEND) == {
        "resent": [version.pk],
        "failed": [],
    }
    # Repeated sweeps send nothing more until the new message, too, has waited in vain.
    assert recover(django_capture_on_commit_callbacks, now + RESEND) == {"resent": [], "failed": []}
    resent = queued_ids(broker)
    assert resent == [version.pk]
    event = AuditEvent.objects.get(action="dataset_version.requeued")
    assert "message was lost" in event.payload["reason"]
    # The message was not lost after all, and arrives along with the new one: built once.
    build_dataset_version.fn(version.pk)
    build_dataset_version.fn(version.pk)
    version.refresh_from_db()
    assert version.status == DatasetVersion.Status.READY and version.attempts == 1
    assert AuditEvent.objects.filter(action="dataset_version.built").count() == 1
    later = now + RESEND + STALE + STALE
    assert recover(django_capture_on_commit_callbacks, later) == {"resent": [], "failed": []}
    assert queued_ids(broker) == []


def test_a_build_with_a_live_heartbeat_is_left_alone(
    outputs, engineer, broker, django_capture_on_commit_callbacks
):
    version = services.dataset_version_create(user=engineer, name="support", seed=1)
    token = leases._dataset_version_claim(version.pk)
    assert token
    claimed_at = timezone.now()
    # Slow but alive: each step renews the heartbeat.
    almost_stale = claimed_at + STALE - timedelta(seconds=2)
    assert recover(django_capture_on_commit_callbacks, almost_stale) == {"resent": [], "failed": []}
    leases._set_progress(version.pk, token, "near dedup", 3, 7)
    version.refresh_from_db()
    beat = version.heartbeat_at
    assert beat >= claimed_at
    assert recover(django_capture_on_commit_callbacks, beat + STALE - timedelta(seconds=2)) == {
        "resent": [],
        "failed": [],
    }
    version.refresh_from_db()
    assert version.run_token == token and version.progress["step"] == "near dedup"
    assert queued_ids(broker) == []
    assert not AuditEvent.objects.filter(action="dataset_version.requeued").exists()


def test_a_dead_worker_is_replaced_and_cannot_finish_afterwards(
    outputs, engineer, broker, django_capture_on_commit_callbacks
):
    version = services.dataset_version_create(user=engineer, name="support", seed=1)
    dead = leases._dataset_version_claim(version.pk)
    now = timezone.now()
    assert recover(django_capture_on_commit_callbacks, now + STALE)["resent"] == [version.pk]
    assert recover(django_capture_on_commit_callbacks, now + STALE)["resent"] == []
    assert queued_ids(broker) == [version.pk]
    version.refresh_from_db()
    assert version.run_started_at is None and version.run_token == "" and version.attempts == 1
    assert (
        "worker stopped"
        in AuditEvent.objects.get(action="dataset_version.requeued").payload["reason"]
    )
    # The replacement builds it; the worker thought dead wakes up and can neither report
    # progress nor fail the version.
    built = services.dataset_version_run(version_id=version.pk)
    assert built is not None and built.status == DatasetVersion.Status.READY
    with pytest.raises(leases._LeaseLost):
        leases._set_progress(version.pk, dead, "write", 0, 1)
    services.dataset_version_fail(version_id=version.pk, error="late", run_token=dead)
    version.refresh_from_db()
    assert version.status == DatasetVersion.Status.READY and version.attempts == 2


def test_a_superseded_worker_stops_at_its_next_step_without_touching_the_version(
    outputs, engineer, broker, django_capture_on_commit_callbacks, monkeypatch
):
    version = services.dataset_version_create(user=engineer, name="support", seed=1)
    real = builds.run_pipeline

    def taken_over_during_the_pipeline(items, settings, **kw):
        # The sweeper judged this worker dead meanwhile and gave the build back to the queue.
        recover(django_capture_on_commit_callbacks, timezone.now() + STALE)
        return real(items, settings, **kw)

    monkeypatch.setattr(builds, "run_pipeline", taken_over_during_the_pipeline)
    assert services.dataset_version_run(version_id=version.pk) is None
    version.refresh_from_db()
    assert version.status == DatasetVersion.Status.BUILDING and not version.members.exists()
    assert version.run_started_at is None and queued_ids(broker) == [version.pk]
    monkeypatch.setattr(builds, "run_pipeline", real)
    assert services.dataset_version_run(version_id=version.pk).status == "ready"


def test_a_build_that_loses_its_worker_every_time_fails_with_why(
    outputs, engineer, broker, django_capture_on_commit_callbacks
):
    version = services.dataset_version_create(user=engineer, name="support", seed=1)
    now = timezone.now()
    for attempt in range(1, services.BUILD_MAX_ATTEMPTS + 1):
        assert leases._dataset_version_claim(version.pk)
        swept = recover(django_capture_on_commit_callbacks, now + attempt * STALE)
        last = attempt == services.BUILD_MAX_ATTEMPTS
        assert swept == {"resent": [] if last else [version.pk], "failed": [version.pk] * last}
    version.refresh_from_db()
    assert version.status == DatasetVersion.Status.FAILED
    assert f"Lost its worker {services.BUILD_MAX_ATTEMPTS} times" in version.error
    assert AuditEvent.objects.filter(action="dataset_version.failed").count() == 1
    assert len(queued_ids(broker)) == services.BUILD_MAX_ATTEMPTS - 1
    much_later = now + timedelta(days=1)
    assert recover(django_capture_on_commit_callbacks, much_later) == {"resent": [], "failed": []}
    assert services.dataset_version_run(version_id=version.pk) is None


def test_an_inline_build_whose_process_died_before_claiming_is_handed_to_a_worker(
    outputs, engineer, broker, django_capture_on_commit_callbacks
):
    version = services.dataset_version_create(user=engineer, name="support", seed=1)
    assert version.enqueued_at is None  # recorded for an inline build that never ran
    swept = recover(django_capture_on_commit_callbacks, timezone.now() + RESEND)
    assert swept["resent"] == [version.pk] and queued_ids(broker) == [version.pk]
    build_dataset_version.fn(version.pk)
    version.refresh_from_db()
    assert version.status == DatasetVersion.Status.READY
