"""A lease that expired and was taken over: the former holder's late submit is a 409 and changes
nothing. Lease times come from the database clock on PostgreSQL, not the web server's."""

from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.models import AuditEvent
from reviews.models import Lease, Output, Review
from reviews.services import queue_claim_next

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db


def expire(lease_id) -> None:
    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk=lease_id).update(expires_at=past)
    Output.objects.filter(lease_id=lease_id).update(lease_expires_at=past)


def test_a_late_submit_after_takeover_is_409_and_changes_nothing(api, personas):
    queue = QueueFactory(name="late", lease_seconds=60)
    output = OutputFactory(queue=queue)
    first = api(personas["reviewer"]).post(f"/api/queues/{queue.pk}/claim/").json()
    expire(first["lease"]["id"])
    second = api(personas["reviewer2"]).post(f"/api/queues/{queue.pk}/claim/").json()
    assert second["item"]["id"] == output.pk
    before = (Review.objects.count(), AuditEvent.objects.count())
    late = api(personas["reviewer"]).post(
        "/api/reviews/",
        {"lease": first["lease"]["id"], "decision": "reject", "reason": "late"},
        format="json",
    )
    assert late.status_code == 409, late.content
    output.refresh_from_db()
    assert str(output.lease_id) == second["lease"]["id"] and output.status == "pending"
    assert (Review.objects.count(), AuditEvent.objects.count()) == before
    # and the new holder's decision still goes through
    ok = api(personas["reviewer2"]).post(
        "/api/reviews/", {"lease": second["lease"]["id"], "decision": "approve"}, format="json"
    )
    assert ok.status_code == 201


def test_a_late_submit_without_takeover_is_409_too(api, personas):
    queue = QueueFactory(name="late", lease_seconds=60)
    OutputFactory(queue=queue)
    lease = api(personas["reviewer"]).post(f"/api/queues/{queue.pk}/claim/").json()["lease"]
    expire(lease["id"])
    late = api(personas["reviewer"]).post(
        "/api/reviews/", {"lease": lease["id"], "decision": "approve"}, format="json"
    )
    assert late.status_code == 409
    assert Review.objects.count() == 0


@pytest.mark.postgres
def test_lease_times_come_from_the_database_clock(personas):
    assert connection.vendor == "postgresql"
    queue = QueueFactory(name="clock", lease_seconds=60)
    OutputFactory(queue=queue)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            database_now = cursor.fetchone()[0]
        # The web server's clock is an hour off; the claim must not notice.
        skewed = timezone.now() + timedelta(hours=1)
        with mock.patch("django.utils.timezone.now", return_value=skewed):
            lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    assert lease.claimed_at == database_now
    assert lease.expires_at == database_now + timedelta(seconds=60)


@pytest.mark.postgres
def test_expiry_is_judged_by_the_database_clock(api, personas):
    """A web server whose clock runs an hour fast must not reject a live lease."""
    queue = QueueFactory(name="clock", lease_seconds=60)
    OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    skewed = timezone.now() + timedelta(hours=1)
    with mock.patch("django.utils.timezone.now", return_value=skewed):
        response = api(personas["reviewer"]).post(
            "/api/reviews/", {"lease": str(lease.pk), "decision": "approve"}, format="json"
        )
    assert response.status_code == 201, response.content
