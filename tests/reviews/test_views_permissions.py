"""Who may open which page of the workbench; every refused side leaves nothing behind."""

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from reviews.models import Lease, Review
from reviews.services import escalation_queue, queue_claim_next

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(personas):
    queue = QueueFactory(name="low-confidence")
    OutputFactory.create_batch(2, queue=queue)
    return queue


@pytest.fixture
def reviewer_lease(queue, personas):
    return queue_claim_next(queue=queue, user=personas["reviewer"])


def as_user(client, user):
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    ("name", "args", "method"),
    [
        ("home", [], "get"),
        ("my-reviews", [], "get"),
        ("queue-work", [1], "get"),
        ("lease-decide", [uuid.uuid4()], "post"),
        ("lease-skip", [uuid.uuid4()], "post"),
        ("lease-renew", [uuid.uuid4()], "post"),
        ("review-undo", [1], "post"),
    ],
)
def test_anonymous_users_are_sent_to_log_in(client, name, args, method):
    url = reverse(name, args=args)
    response = getattr(client, method)(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_the_login_page_logs_in_and_lands_on_the_queues(client, personas, queue):
    page = client.get(reverse("login"))
    assert b'<label for="id_username">' in page.content
    response = client.post(
        reverse("login"), {"username": "reviewer", "password": "pw-for-tests"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert b"low-confidence" in response.content
    assert reverse("queue-work", args=[queue.pk]).encode() in response.content


def test_the_home_page_shows_counts_and_links_only_workable_queues(client, personas, queue):
    leads_only = QueueFactory(name="leads-only", role="lead")
    html = as_user(client, personas["reviewer"]).get(reverse("home")).content.decode()
    assert reverse("queue-work", args=[queue.pk]) in html
    assert "leads-only" not in html  # reviewers only see the queues they work
    html = as_user(Client(), personas["auditor"]).get(reverse("home")).content.decode()
    assert "low-confidence" in html and "leads-only" in html  # overseers see all...
    assert reverse("queue-work", args=[queue.pk]) not in html  # ...but work none
    assert reverse("queue-work", args=[leads_only.pk]) not in html


@pytest.mark.parametrize("who", ["reviewer", "reviewer2", "outsider", "auditor", "ml_engineer"])
def test_only_leads_open_the_escalations_queue(client, personas, who):
    escalations = escalation_queue()
    response = as_user(client, personas[who]).get(reverse("queue-work", args=[escalations.pk]))
    assert response.status_code == 403
    assert Lease.objects.count() == 0


def test_a_reviewer_cannot_open_a_queue_of_another_role(client, personas):
    leads_only = QueueFactory(name="leads-only", role="lead")
    OutputFactory(queue=leads_only)
    response = as_user(client, personas["reviewer"]).get(
        reverse("queue-work", args=[leads_only.pk])
    )
    assert response.status_code == 403
    assert "You may not work the queue" in response.content.decode()
    assert Lease.objects.count() == 0


@pytest.mark.parametrize("who", ["outsider", "auditor", "approver", "deployer", "ml_engineer"])
def test_people_without_a_reviewing_role_cannot_claim(client, personas, queue, who):
    response = as_user(client, personas[who]).get(reverse("queue-work", args=[queue.pk]))
    assert response.status_code == 403
    assert Lease.objects.count() == 0


def test_leads_and_admins_work_reviewer_queues(client, personas, queue):
    for who in ("lead", "admin"):
        response = as_user(Client(), personas[who]).get(reverse("queue-work", args=[queue.pk]))
        assert response.status_code == 200
    assert Lease.objects.count() == 2


@pytest.mark.parametrize("who", ["auditor", "reviewer2", "lead", "outsider"])
@pytest.mark.parametrize("action", ["lease-decide", "lease-skip"])
def test_nobody_decides_or_skips_on_someone_elses_lease(
    client, personas, reviewer_lease, who, action
):
    response = as_user(client, personas[who]).post(
        reverse(action, args=[reviewer_lease.pk]), {"decision": "approve"}
    )
    assert response.status_code == 403
    assert Review.objects.count() == 0
    reviewer_lease.refresh_from_db()
    assert reviewer_lease.ended_at is None


@pytest.mark.parametrize("who", ["auditor", "reviewer2"])
def test_nobody_renews_someone_elses_lease(client, personas, reviewer_lease, who):
    response = as_user(client, personas[who]).post(reverse("lease-renew", args=[reviewer_lease.pk]))
    assert response.status_code == 403
    reviewer_lease.refresh_from_db()
    assert reviewer_lease.renewals == 0


def test_a_reviewer_who_lost_the_role_cannot_decide_on_their_lease(
    client, personas, reviewer_lease, roles
):
    personas["reviewer"].groups.remove(roles["reviewer"])
    response = as_user(client, personas["reviewer"]).post(
        reverse("lease-decide", args=[reviewer_lease.pk]), {"decision": "approve"}
    )
    assert response.status_code == 403
    assert Review.objects.count() == 0


def test_unknown_leases_and_closed_queues_are_not_found(client, personas, queue):
    as_user(client, personas["reviewer"])
    assert client.post(reverse("lease-decide", args=[uuid.uuid4()])).status_code == 404
    assert client.post(reverse("lease-skip", args=[uuid.uuid4()])).status_code == 404
    assert client.post(reverse("lease-renew", args=[uuid.uuid4()])).status_code == 404
    closed = QueueFactory(name="closed", is_active=False)
    assert client.get(reverse("queue-work", args=[closed.pk])).status_code == 404


def test_decisions_need_a_post_with_a_csrf_token(personas, reviewer_lease):
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas["reviewer"])
    url = reverse("lease-decide", args=[reviewer_lease.pk])
    assert client.get(url).status_code == 405
    assert client.post(url, {"decision": "approve"}).status_code == 403
    assert Review.objects.count() == 0
    # With the token, sent the way htmx sends it (a header), the decision goes through.
    page = client.get(reverse("queue-work", args=[reviewer_lease.queue_id]))
    token = page.cookies["csrftoken"].value
    response = client.post(
        url, {"decision": "approve"}, HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert Review.objects.count() == 1
