"""Pages show guidelines and model outputs escaped, refuse POSTs without a CSRF token, and carry
the security headers."""

import pytest
from django.test import Client

from reviews.services import guidelines_publish

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db

SCRIPT = '<script>alert("x")</script><img src=x onerror="alert(1)">'


@pytest.fixture
def bench(personas):
    queue = QueueFactory(name="xss")
    OutputFactory(queue=queue, output_text=SCRIPT, input=f"Question {SCRIPT}")
    guidelines_publish(queue=queue, user=personas["lead"], text=f"# Rules\n\n{SCRIPT}")
    return queue


def test_outputs_and_markdown_guidelines_are_shown_escaped(bench, personas, client):
    client.force_login(personas["reviewer"])
    page = client.get(f"/queues/{bench.pk}/work/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>alert" not in html
    assert 'onerror="alert(1)"' not in html


def test_the_workbench_forms_refuse_a_post_without_csrf_token(bench, personas):
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas["reviewer"])
    page = client.get(f"/queues/{bench.pk}/work/")
    assert "csrfmiddlewaretoken" in page.content.decode()
    lease = page.context["lease"]
    response = client.post(f"/leases/{lease.pk}/decide/", {"decision": "approve"})
    assert response.status_code == 403


def test_every_page_form_posts_with_a_csrf_token(world, client):
    client.force_login(world.people["admin"])
    for url in ("/", "/datasets/new/", "/training/runs/new/", "/training/webhooks/"):
        html = client.get(url).content.decode()
        forms = html.count('method="post"')
        assert html.count("csrfmiddlewaretoken") >= forms, url


@pytest.mark.parametrize("url", ["/accounts/login/", "/api/queues/"])
def test_security_headers_are_present(client, url):
    response = client.get(url)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
