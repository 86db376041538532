"""Webhooks: lifecycle events signed with HMAC-SHA256, checked by a real receiver on
127.0.0.1, retried with backoff, and configured and read by admins only."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.utils import timezone

from core.models import AuditEvent
from governance.models import Channel
from governance.services import (
    channel_deploy,
    channel_rollback,
    signoff_decide,
    signoff_request_create,
)
from monitoring import tasks
from monitoring.models import WebhookDelivery
from monitoring.services.webhooks import (
    backoff_seconds,
    webhook_deliver,
    webhook_save,
    webhook_signature_valid,
)

from .governance_helpers import finish_evaluations, make_channel, make_version

SECRET = "s3cret-for-the-test-receiver"
ALL_EVENTS = [
    "version.awaiting_signoff",
    "version.approved",
    "channel.deployed",
    "channel.rolled_back",
    "drift.alert",
]


class Receiver:
    """An HTTP server in a thread that checks each request's signature itself."""

    def __init__(self, failures: int = 0):
        self.received: list[dict] = []
        self.failures = failures
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers["X-Signoff-Timestamp"]
                signature = self.headers["X-Signoff-Signature"]
                expected = (
                    "sha256="
                    + hmac.new(
                        SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
                    ).hexdigest()
                )
                outer.received.append(
                    {
                        "event": self.headers["X-Signoff-Event"],
                        "body": json.loads(body),
                        "valid": hmac.compare_digest(expected, signature),
                        "helper_valid": webhook_signature_valid(
                            secret=SECRET, timestamp=timestamp, body=body, signature=signature
                        ),
                        "tampered_valid": webhook_signature_valid(
                            secret=SECRET,
                            timestamp=timestamp,
                            body=body + b" ",
                            signature=signature,
                        ),
                    }
                )
                if outer.failures > 0:
                    outer.failures -= 1
                    self.send_response(500)
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dataset(make_dataset_version, tiny_base_model, training_dirs):
    return make_dataset_version(2, 1)


@pytest.fixture
def sent(monkeypatch):
    """What the services hand to the actor (the stub broker is not drained in these tests)."""
    calls = []
    monkeypatch.setattr(tasks.deliver_webhook, "send", lambda *a: calls.append((a, None)))
    monkeypatch.setattr(
        tasks.deliver_webhook,
        "send_with_options",
        lambda *, args, delay: calls.append((args, delay)),
    )
    return calls


def test_it_signs_events_a_receiver_can_verify(
    personas, dataset, tmp_path, sent, django_capture_on_commit_callbacks
):
    with Receiver() as receiver:
        webhook_save(
            user=personas["admin"],
            name="ops",
            url=receiver.url,
            events=ALL_EVENTS,
            secret=SECRET,
        )
        channel = make_channel("production")
        version = make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)
        with django_capture_on_commit_callbacks(execute=True):
            request = signoff_request_create(
                user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
            )
        finish_evaluations(request)
        with django_capture_on_commit_callbacks(execute=True):
            signoff_decide(
                user=personas["approver"], request=request, decision="approve", comment="ok"
            )
        with django_capture_on_commit_callbacks(execute=True):
            channel_deploy(user=personas["deployer"], channel=channel, version=version)
        assert len(sent) == 3
        for (delivery_id,), _ in sent:
            tasks.deliver_webhook.fn(delivery_id)
    events = [r["event"] for r in receiver.received]
    assert events == ["version.awaiting_signoff", "version.approved", "channel.deployed"]
    assert all(r["valid"] and r["helper_valid"] for r in receiver.received)
    assert not any(r["tampered_valid"] for r in receiver.received)
    deployed = receiver.received[2]["body"]
    assert deployed["event"] == "channel.deployed"
    assert deployed["data"]["version_name"] == version.name
    assert deployed["data"]["channel"] == "production"
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}


def test_a_rolled_back_change_sends_nothing(personas, dataset, tmp_path, sent):
    webhook_save(user=personas["admin"], name="ops", url="http://127.0.0.1:9/x", events=ALL_EVENTS)
    channel = make_channel("production")
    version = make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - any failure after the emit
        from django.db import transaction

        with transaction.atomic():
            signoff_request_create(
                user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
            )
            raise RuntimeError("boom")
    assert not WebhookDelivery.objects.exists()
    assert sent == []


def test_it_retries_with_backoff_then_delivers(
    personas, sent, settings, django_capture_on_commit_callbacks
):
    settings.SIGNOFF_MONITORING = {
        **settings.SIGNOFF_MONITORING,
        "WEBHOOK_BACKOFF_SECONDS": 30,
        "WEBHOOK_MAX_ATTEMPTS": 5,
    }
    from monitoring.services.webhooks import webhook_event_emit

    with Receiver(failures=2) as receiver:
        webhook_save(
            user=personas["admin"],
            name="ops",
            url=receiver.url,
            events=["drift.alert"],
            secret=SECRET,
        )
        from django.db import transaction

        with transaction.atomic():
            (delivery,) = webhook_event_emit(event="drift.alert", payload={"x": 1})

        before = timezone.now()
        with django_capture_on_commit_callbacks(execute=True):
            first = webhook_deliver(delivery_id=delivery.pk)
        assert first.status == "pending" and first.attempts == 1 and first.last_status_code == 500
        assert first.next_attempt_at >= before + timedelta(seconds=29)
        # Sent again by the broker meanwhile: not due, nothing is posted.
        assert webhook_deliver(delivery_id=delivery.pk) is None
        assert len(receiver.received) == 1

        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            second = webhook_deliver(delivery_id=delivery.pk)
        assert second.attempts == 2 and second.status == "pending"
        assert second.next_attempt_at >= timezone.now() + timedelta(seconds=59)

        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            third = webhook_deliver(delivery_id=delivery.pk)
    assert third.status == "delivered" and third.attempts == 3
    assert [e["status_code"] for e in third.log] == [500, 500, 204]
    assert len(receiver.received) == 3
    # Each failure scheduled the next attempt on the actor with the doubled delay.
    assert [delay for _, delay in sent if delay is not None] == [30_000, 60_000]
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [30, 60, 120]
    # Delivered: a late duplicate message does nothing.
    assert webhook_deliver(delivery_id=delivery.pk) is None


def test_it_gives_up_after_the_last_attempt(personas, sent, settings):
    settings.SIGNOFF_MONITORING = {**settings.SIGNOFF_MONITORING, "WEBHOOK_MAX_ATTEMPTS": 2}
    from django.db import transaction

    from monitoring.services.webhooks import webhook_event_emit

    # Nothing listens on port 9 of 127.0.0.1: the connection is refused.
    webhook_save(
        user=personas["admin"], name="dead", url="http://127.0.0.1:9/", events=["drift.alert"]
    )
    with transaction.atomic():
        (delivery,) = webhook_event_emit(event="drift.alert", payload={})
    webhook_deliver(delivery_id=delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    last = webhook_deliver(delivery_id=delivery.pk)
    assert last.status == "failed" and last.attempts == 2 and last.last_error


def test_rollback_is_an_event_too(personas, dataset, tmp_path, sent):
    webhook_save(
        user=personas["admin"],
        name="ops",
        url="http://127.0.0.1:9/",
        events=["channel.rolled_back"],
    )
    channel = make_channel("production")
    versions = []
    for seed in (1, 2):
        version = make_version(
            launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, seed=seed
        )
        request = signoff_request_create(
            user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
        )
        finish_evaluations(request)
        signoff_decide(user=personas["approver"], request=request, decision="approve", comment="ok")
        channel_deploy(user=personas["deployer"], channel=channel, version=version)
        versions.append(version)
    assert not WebhookDelivery.objects.exists()
    channel_rollback(user=personas["deployer"], channel=Channel.objects.get(pk=channel.pk))
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.event == "channel.rolled_back"
    assert delivery.payload["data"]["version"] == str(versions[0].pk)


# -- configuration and the log: admins only ----------------------------------------------------


@pytest.mark.parametrize(
    "role", ["reviewer", "lead", "ml_engineer", "approver", "deployer", "auditor", "outsider"]
)
def test_only_admins_configure_and_read_webhooks(api, client, personas, role):
    user = personas[role]
    body = {"name": "x", "url": "https://example.test/h", "events": ["drift.alert"]}
    assert api(user).post("/api/webhooks/", body, format="json").status_code == 403
    assert api(user).get("/api/webhooks/").status_code == 403
    assert api(user).get("/api/webhooks/deliveries/").status_code == 403
    client.force_login(user)
    assert client.get("/training/webhooks/").status_code == 403


def test_admins_create_webhooks_and_see_the_log(api, client, personas):
    admin = api(personas["admin"])
    answer = admin.post(
        "/api/webhooks/",
        {"name": "ops", "url": "https://example.test/h", "events": ["drift.alert"]},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    assert len(answer.json()["secret"]) == 64
    assert "secret" not in admin.get("/api/webhooks/").json()["results"][0]
    assert AuditEvent.objects.filter(action="webhook.created").count() == 1
    assert admin.get("/api/webhooks/deliveries/").json() == {
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
    }
    client.force_login(personas["admin"])
    page = client.get("/training/webhooks/")
    assert page.status_code == 200 and b"Delivery log" in page.content


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "a", "url": "ftp://x/", "events": ["drift.alert"]}, "url"),
        ({"name": "a", "url": "https://x.test/", "events": ["nope"]}, "events[0]"),
        ({"name": "a", "url": "https://x.test/", "events": []}, "events"),
        (
            {"name": "a", "url": "https://x.test/", "events": ["drift.alert"], "secret": "short"},
            "secret",
        ),
    ],
)
def test_bad_webhooks_name_the_field(api, personas, body, field):
    answer = api(personas["admin"]).post("/api/webhooks/", body, format="json")
    assert answer.status_code == 400
    assert answer.json()["field"] == field
