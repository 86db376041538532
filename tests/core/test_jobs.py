"""core.jobs, the machinery every kind of job shares: a stale lease is taken back once however
many sweeps race for it, a heartbeat stops once its lease is lost, and the resend leaves alone
a message the broker still holds.

The job here is a dataset build seen through a spec of the test's own (its run token is the
lease owner, and stands in for a message id too): core knows a kind only by its spec."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from core import jobs
from core.jobs import JobSpec, LeaseHeartbeat, lease_renew, lost_messages_resend, stale_leases_sweep
from core.models import AuditEvent
from datasets_app.models import DatasetVersion

BUILDING = DatasetVersion.Status.BUILDING
LONG_AGO = timedelta(hours=1)


def spec(**overrides) -> JobSpec:
    moves = {
        "requeue": lambda row, lost, now: _release(row),
        "fail": lambda row, lost, now: bool(
            DatasetVersion.objects.filter(pk=row.pk).update(status="failed", error=lost)
        ),
    }
    return JobSpec(
        **{
            "model": DatasetVersion,
            "audit_as": "dataset_version",
            "running": BUILDING,
            "queued": BUILDING,
            "owner_field": "run_token",
            "message_field": "run_token",
            "stale_after_s": lambda: 60,
            "resend_after_s": lambda: 60,
            "max_attempts": lambda: 3,
            **moves,
            **overrides,
        }
    )


def _release(row) -> bool:
    return bool(DatasetVersion.objects.filter(pk=row.pk).update(run_token="", heartbeat_at=None))


def build(personas, name="world", *, owner="w1", beat_ago=LONG_AGO, attempts=1):
    now = timezone.now()
    return DatasetVersion.objects.create(
        name=name,
        created_by=personas["admin"],
        run_token=owner,
        run_started_at=now - beat_ago,
        heartbeat_at=now - beat_ago,
        enqueued_at=now - beat_ago,
        attempts=attempts,
    )


# -- the sweep ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_requeues_fails_after_max_attempts_and_honours_a_cancel(personas):
    cancelled = []
    sweep_spec = spec(
        cancel_requested=lambda row: row.name == "cancel me",
        cancel=lambda row, lost, now: cancelled.append(row.pk) or _release(row),
    )
    lost_once = build(personas, "lost once", attempts=1)
    lost_thrice = build(personas, "lost thrice", owner="w3", attempts=3)
    to_cancel = build(personas, "cancel me", attempts=3)
    alive = build(personas, "alive", beat_ago=timedelta(seconds=5))

    done = stale_leases_sweep(sweep_spec, now=timezone.now())

    assert list(done) == ["requeued", "failed", "cancelled"]  # the report's order
    assert done == {
        "requeued": [str(lost_once.pk)],
        "failed": [str(lost_thrice.pk)],
        "cancelled": [str(to_cancel.pk)],
    }
    assert cancelled == [to_cancel.pk]
    failed = DatasetVersion.objects.get(pk=lost_thrice.pk)
    assert failed.error.startswith("worker w3 stopped (last heartbeat ")
    assert DatasetVersion.objects.get(pk=alive.pk).run_token == "w1"  # a live lease is kept
    # Taken back: the next sweep finds nothing.
    assert stale_leases_sweep(sweep_spec, now=timezone.now()) == {
        "requeued": [],
        "failed": [],
        "cancelled": [],
    }


@pytest.mark.django_db
def test_a_move_that_lost_its_race_is_not_reported(personas):
    build(personas)
    done = stale_leases_sweep(spec(requeue=lambda row, lost, now: False), now=timezone.now())
    assert done == {"requeued": [], "failed": []}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_stale_lease_is_taken_back_once_when_sweeps_race(personas):
    """Four sweeps start together and all see the stale row; the row lock makes the others
    wait for the first decision, and their re-read finds the lease no longer stale."""
    version = build(personas)
    moves = []

    def slow_requeue(row, lost, now):
        moves.append(row.pk)
        time.sleep(0.3)  # hold the row lock while the other sweeps arrive
        return _release(row)

    racing = spec(requeue=slow_requeue)
    start = threading.Barrier(4)
    reports, errors = [], []

    def sweep():
        try:
            start.wait()
            reports.append(stale_leases_sweep(racing, now=timezone.now()))
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)  # generous: a loaded machine is slow, never stuck
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert moves == [version.pk]
    assert sorted(r["requeued"] for r in reports) == [[], [], [], [str(version.pk)]]


# -- the heartbeat -----------------------------------------------------------------------------


def wait_until(condition, what: str, seconds: float = 600.0) -> None:
    """Poll until `condition` holds; the limit only catches a hang, never a slow machine."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_renews_its_lease_and_stops_once_it_is_lost(personas):
    version = build(personas)
    before = version.heartbeat_at
    heartbeat = LeaseHeartbeat(spec(), version.pk, "w1", every=0.05)
    heartbeat.start()
    try:
        wait_until(
            lambda: DatasetVersion.objects.get(pk=version.pk).heartbeat_at > before,
            "the first heartbeat",
        )
        # The sweep gave the build to another worker.
        DatasetVersion.objects.filter(pk=version.pk).update(run_token="w2")
        heartbeat.join(timeout=600)
        assert not heartbeat.is_alive() and heartbeat.lost
        beat = DatasetVersion.objects.get(pk=version.pk).heartbeat_at
        time.sleep(0.2)
        assert DatasetVersion.objects.get(pk=version.pk).heartbeat_at == beat
    finally:
        heartbeat.stop()


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_stopped_by_its_worker_did_not_lose_its_lease(personas):
    version = build(personas)
    heartbeat = LeaseHeartbeat(spec(), version.pk, "w1", every=0.05)
    heartbeat.start()
    heartbeat.stop()
    assert not heartbeat.is_alive() and not heartbeat.lost


@pytest.mark.django_db
def test_a_lease_is_renewed_only_by_its_holder(personas):
    version = build(personas)
    assert lease_renew(spec(), pk=version.pk, owner="w1", progress={"step": "dedup"})
    assert not lease_renew(spec(), pk=version.pk, owner="w2")
    version.refresh_from_db()
    assert version.progress == {"step": "dedup"}
    assert timezone.now() - version.heartbeat_at < timedelta(seconds=30)


# -- the resend --------------------------------------------------------------------------------


class FakeActor:
    broker = object()
    queue_name = "builds"


@pytest.fixture
def broker_holds(monkeypatch):
    """broker_holds(ids): what the broker says it holds (None: a broker that cannot say)."""
    import config.dramatiq

    def holds(ids):
        monkeypatch.setattr(config.dramatiq, "broker_message_ids", lambda broker, queue: ids)

    return holds


def resend_spec(sent):
    def enqueue(pk):
        new_id = f"m-{pk}-{len(sent)}"
        DatasetVersion.objects.filter(pk=pk).update(run_token=new_id, enqueued_at=timezone.now())
        sent.append(pk)
        return new_id

    return spec(actor=lambda: FakeActor, enqueue=enqueue)


def resend_events(version) -> list:
    events = AuditEvent.objects.filter(
        action="dataset_version.message_resent", object_id=str(version.pk)
    )
    return [event.payload for event in events]


@pytest.mark.django_db
def test_resend_skips_messages_the_broker_still_holds(personas, broker_holds):
    held = build(personas, "held", owner="m-held")
    lost = build(personas, "lost", owner="m-lost")
    recent = build(personas, "recent", owner="m-recent", beat_ago=timedelta(seconds=5))
    sent = []
    broker_holds({"m-held", "m-recent"})

    assert lost_messages_resend(resend_spec(sent), now=timezone.now()) == [str(lost.pk)]

    assert sent == [lost.pk]
    assert resend_events(lost) == [
        {
            "lost_message": "m-lost",
            "message": f"m-{lost.pk}-0",
            "why": "the broker no longer holds it",
        }
    ]
    assert resend_events(held) == resend_events(recent) == []
    # The new message was sent just now: not lost (yet).
    assert lost_messages_resend(resend_spec(sent), now=timezone.now()) == []


@pytest.mark.django_db
def test_a_broker_that_cannot_say_gets_every_late_message_again(personas, broker_holds):
    late = build(personas, owner="m-late")
    broker_holds(None)
    assert lost_messages_resend(resend_spec([]), now=timezone.now()) == [str(late.pk)]
    assert resend_events(late)[0]["why"] == "the broker cannot say"


@pytest.mark.django_db
def test_an_unreachable_broker_decides_nothing(personas, monkeypatch, caplog):
    import redis

    import config.dramatiq

    def unreachable(broker, queue):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(config.dramatiq, "broker_message_ids", unreachable)
    late = build(personas, owner="m-late")
    sent = []
    assert lost_messages_resend(resend_spec(sent), now=timezone.now()) == []
    assert sent == [] and resend_events(late) == []
    assert "broker unreachable (connection refused)" in caplog.text


def test_a_worker_is_named_by_host_process_and_thread():
    host, pid, thread = jobs.worker_owner().rsplit(":", 2)
    assert host and int(pid) > 0 and int(thread) == threading.get_ident()
