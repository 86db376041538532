"""Every answer under /api/ is JSON with `detail` and `code`, the ones Django gives before or
after a view runs (no route, a crash, a refused host) included; pages keep their HTML."""

import pytest

from reviews.api import views as review_api

pytestmark = pytest.mark.django_db


def _json_error(answer, status: int, code: str) -> dict:
    assert answer.status_code == status
    assert answer["Content-Type"] == "application/json"
    body = answer.json()
    assert body["code"] == code and body["detail"], body
    return body


@pytest.fixture
def reviewer(api, personas):
    return api(personas["reviewer"])


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/nothing-here/"),
        ("get", "/api"),
        # The route exists, but its converter refuses the id: Django's resolver answers.
        ("post", "/api/leases/not-a-uuid/renew/"),
        ("get", "/api/queues/not-a-number/"),
    ],
)
def test_a_path_no_endpoint_answers_is_a_json_404(reviewer, method, path):
    body = _json_error(getattr(reviewer, method)(path), 404, "not_found")
    assert path in body["detail"]


def test_a_method_the_endpoint_does_not_take_is_a_json_405(reviewer):
    body = _json_error(reviewer.delete("/api/queues/"), 405, "method_not_allowed")
    assert body["detail"] == 'Method "DELETE" not allowed.'


def test_a_crash_is_a_json_500(reviewer, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("a bug, with internals the client must not see")

    monkeypatch.setattr(review_api.selectors, "queues_for", crash)
    reviewer.raise_request_exception = False
    body = _json_error(reviewer.get("/api/queues/"), 500, "error")
    assert "internals" not in body["detail"]


def test_a_refused_host_is_a_json_400(reviewer):
    body = _json_error(reviewer.get("/api/queues/", HTTP_HOST="evil.example"), 400, "bad_request")
    assert "evil" not in body["detail"]


def test_pages_keep_their_html_error_pages(client, personas, monkeypatch):
    client.force_login(personas["reviewer"])
    missing = client.get("/no-such-page/")
    assert missing.status_code == 404 and missing["Content-Type"].startswith("text/html")
    assert b"Not Found" in missing.content
    refused = client.get("/", HTTP_HOST="evil.example")
    assert refused.status_code == 400 and refused["Content-Type"].startswith("text/html")

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("reviews.views.render", crash)
    client.raise_request_exception = False
    crashed = client.get("/")
    assert crashed.status_code == 500 and crashed["Content-Type"].startswith("text/html")
