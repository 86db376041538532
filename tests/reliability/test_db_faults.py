"""The database connection dies in the middle of a claim or an ingest: the transaction rolls
back, no lease is left behind, and the API answers 503 with Retry-After (safe to retry)."""

import contextlib

import psycopg
import pytest
from django.db import OperationalError, connection

from core.models import AuditEvent
from reviews.models import Lease, Output

from ..factories import OutputFactory, QueueFactory, output_payload


@contextlib.contextmanager
def fail_on(sql_fragment: str, kill):
    """Run `kill()` right before the first statement containing `sql_fragment`."""
    fired = []

    def wrapper(execute, sql, params, many, context):
        if not fired and sql_fragment in sql:
            fired.append(sql)
            kill()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield fired


def terminate_own_backend():
    """pg_terminate_backend from a second connection, as a crash or a failover would."""
    pid = connection.connection.info.backend_pid
    settings = connection.settings_dict
    with psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        password=settings["PASSWORD"] or None,
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def raise_lock_error():
    raise OperationalError("database is locked")


def check_retryable(response):
    assert response.status_code == 503, response.content
    assert response["Retry-After"]
    assert response.json()["code"] == "retry"


def claim(api, reviewer, queue):
    return api(reviewer).post(f"/api/queues/{queue.pk}/claim/")


@pytest.fixture
def fault(vendor):
    """How the connection dies: killed server-side on PostgreSQL, a lock error elsewhere."""
    return terminate_own_backend if vendor == "postgresql" else raise_lock_error


@pytest.fixture
def claim_write(vendor):
    """The claim's last write (reviews/services/leases.py): on PostgreSQL the one statement
    that picks, points and inserts the lease; on SQLite the second statement, which points the
    item at the lease row the first one inserted. Dying there must undo the whole claim."""
    return "WITH picked AS" if vendor == "postgresql" else "SET lease_id = "


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_connection_dies_leaves_no_lease(api, personas, fault, claim_write):
    queue = QueueFactory(name="faulty")
    output = OutputFactory(queue=queue)
    with fail_on(claim_write, fault) as fired:
        response = claim(api, personas["reviewer"], queue)
    assert fired
    check_retryable(response)
    connection.close()
    assert Lease.objects.count() == 0
    output.refresh_from_db()
    assert output.lease_id is None and output.lease_expires_at is None
    # The retry the client is told to make gets the item.
    again = claim(api, personas["reviewer"], queue)
    assert again.status_code == 200
    assert again.json()["item"]["id"] == output.pk


@pytest.mark.django_db(transaction=True)
def test_an_ingest_whose_connection_dies_writes_nothing(api, personas, fault):
    batch = [output_payload(i) for i in range(300)]
    events_before = AuditEvent.objects.count()
    with fail_on('INSERT INTO "reviews_auditevent"', fault) as fired:
        response = api(personas["ml_engineer"]).post("/api/outputs/", batch, format="json")
    assert fired
    check_retryable(response)
    connection.close()
    assert Output.objects.count() == 0
    assert AuditEvent.objects.count() == events_before
    again = api(personas["ml_engineer"]).post("/api/outputs/", batch, format="json")
    assert again.status_code == 201 and again.json()["created"] == 300


@pytest.mark.django_db(transaction=True)
def test_a_decision_whose_connection_dies_keeps_the_lease(api, personas, fault):
    queue = QueueFactory(name="faulty")
    output = OutputFactory(queue=queue)
    lease_id = claim(api, personas["reviewer"], queue).json()["lease"]["id"]
    body = {"lease": lease_id, "decision": "approve"}
    with fail_on('INSERT INTO "reviews_review"', fault) as fired:
        response = api(personas["reviewer"]).post("/api/reviews/", body, format="json")
    assert fired
    check_retryable(response)
    connection.close()
    output.refresh_from_db()
    assert output.status == "pending" and str(output.lease_id) == lease_id
    assert Lease.objects.get(pk=lease_id).ended_at is None
    again = api(personas["reviewer"]).post("/api/reviews/", body, format="json")
    assert again.status_code == 201


@pytest.mark.django_db(transaction=True)
def test_the_workbench_page_answers_503_when_its_claim_loses_the_connection(
    client, personas, fault, claim_write
):
    queue = QueueFactory(name="faulty")
    output = OutputFactory(queue=queue)
    client.force_login(personas["reviewer"])
    client.raise_request_exception = False
    with fail_on(claim_write, fault) as fired:
        response = client.get(f"/queues/{queue.pk}/work/")
    assert fired
    assert response.status_code == 503
    assert response["Retry-After"]
    connection.close()
    assert Lease.objects.count() == 0
    output.refresh_from_db()
    assert output.lease_id is None
