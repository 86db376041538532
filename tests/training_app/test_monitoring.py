"""Monitoring after release: rates with Wilson intervals, drift alerts raised once, the audit
sample, the API, the command, and who may see and change what."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.audit import audit_verify
from core.models import AuditEvent
from governance.models import Channel
from monitoring.models import DriftAlert
from monitoring.selectors import (
    bucket_counts,
    counts_between,
    drift_status,
    outputs_for,
    version_figures,
    wilson_interval,
)
from monitoring.services.drift import channel_monitoring_save, drift_check
from reviews.models import Output
from reviews.services import outputs_ingest
from tests.factories import OutputFactory

from .governance_helpers import make_channel, make_version

VIEWERS = ["ml_engineer", "approver", "deployer", "auditor", "admin"]
NOT_VIEWERS = ["reviewer", "lead", "outsider"]


@pytest.fixture
def dataset(make_dataset_version, tiny_base_model, training_dirs):
    return make_dataset_version(2, 1)


@pytest.fixture
def live(personas, dataset, tmp_path):
    """A deployed version, live on `production` (set directly: deployment is tested elsewhere)."""
    version = make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, status="deployed"
    )
    channel = make_channel("production")
    Channel.objects.filter(pk=channel.pk).update(live_version=version)
    channel.refresh_from_db()
    return version, channel


def reviewed(version, channel, resolution, count, *, when=None, escalated=False):
    when = when or timezone.now()
    for _ in range(count):
        OutputFactory(
            source=f"channel:{channel.name}",
            model_version=version.name,
            status="resolved",
            resolution=resolution,
            resolved_by="single",
            resolved_at=when,
            escalated_at=when if escalated else None,
        )


# -- Wilson intervals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        # Known values (Wilson 1927; e.g. Newcombe 1998, Table I, z = 1.96).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_it_computes_wilson_bounds(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_it_gives_the_whole_range_without_a_sample():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


# -- rates in buckets ---------------------------------------------------------------------------


def test_it_counts_rates_per_day_and_week_on_crafted_data(live):
    version, channel = live
    day1 = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=9)
    day2 = day1 + timedelta(days=1)
    reviewed(version, channel, "approved", 6, when=day1)
    reviewed(version, channel, "corrected", 3, when=day1)
    reviewed(version, channel, "rejected", 1, when=day1, escalated=True)
    reviewed(version, channel, "corrected", 4, when=day2)
    # Not reviewed: auto-accepted and pending answers, and another version's.
    OutputFactory(source="channel:production", model_version=version.name, status="auto_accepted")
    OutputFactory(source="channel:production", model_version=version.name, status="pending")
    OutputFactory(source="channel:production", model_version="other", status="resolved")

    rows = bucket_counts(outputs_for(version=version, channel=channel), bucket="day", since=None)
    assert [r[0].date() for r in rows] == [day1.date(), day2.date()]
    first, second = rows[0][1], rows[1][1]
    assert (first.n, first.approved, first.corrected, first.rejected, first.escalated) == (
        10,
        6,
        3,
        1,
        1,
    )
    rates = first.rates()
    assert rates["approval"]["rate"] == 0.6
    assert rates["correction"]["rate"] == 0.3
    assert rates["correction"]["ci_low"] == pytest.approx(0.1078, abs=1e-4)
    assert rates["correction"]["ci_high"] == pytest.approx(0.6032, abs=1e-4)
    assert second.n == 4 and second.rates()["correction"]["rate"] == 1.0

    weekly = bucket_counts(outputs_for(version=version), bucket="week", since=None)
    assert sum(c.n for _, c in weekly) == 14
    figures = version_figures(version=version, bucket="day")
    assert figures["reviewed"] == 14 and figures["traffic"] == 16
    assert figures["channels"][0]["channel"] == "production"
    assert len(figures["buckets"]) == 2


# -- drift --------------------------------------------------------------------------------------


@pytest.fixture
def thresholds(personas, live):
    _version, channel = live
    return channel_monitoring_save(
        user=personas["admin"],
        channel=channel,
        audit_sample_rate=0.2,
        margin=0.1,
        min_samples=20,
        baseline={"correction": 0.2, "rejection": 0.05},
    )


def test_it_does_not_raise_below_the_threshold(live, thresholds):
    version, channel = live
    # 6/20 = 0.30: at the threshold (0.2 + 0.1), not above it.
    reviewed(version, channel, "corrected", 6)
    reviewed(version, channel, "approved", 14)
    assert drift_check(version=version, channel=channel) == []
    assert not DriftAlert.objects.exists()


def test_it_waits_for_enough_samples(live, thresholds):
    version, channel = live
    reviewed(version, channel, "corrected", 19)  # 100 % but 19 < 20
    status = drift_status(version=version, channel=channel)
    assert status["metrics"]["correction"]["enough_samples"] is False
    assert drift_check(version=version, channel=channel) == []


def test_it_raises_the_alert_exactly_once(live, thresholds, settings, api, personas):
    settings.SIGNOFF_MONITORING = {**settings.SIGNOFF_MONITORING, "ALERT_EMAILS": ["ml@x.test"]}
    version, channel = live
    reviewed(version, channel, "corrected", 7)
    reviewed(version, channel, "approved", 13)  # 7/20 = 0.35 > 0.30
    # Old reviews fall outside the window and do not count.
    reviewed(version, channel, "approved", 50, when=timezone.now() - timedelta(days=30))

    # The guard is the database's: a second row for the same metric is refused.
    with pytest.raises(IntegrityError), transaction.atomic():
        DriftAlert.objects.create(
            version=version,
            channel=channel,
            metric="correction",
            baseline=0,
            baseline_source="x",
            observed=1,
            ci_low=0,
            ci_high=1,
            margin=0,
            samples=1,
            window_start=timezone.now(),
        )
        DriftAlert.objects.create(
            version=version,
            channel=channel,
            metric="correction",
            baseline=0,
            baseline_source="x",
            observed=1,
            ci_low=0,
            ci_high=1,
            margin=0,
            samples=1,
            window_start=timezone.now(),
        )
    assert not DriftAlert.objects.exists()

    raised = drift_check(version=version, channel=channel)
    assert [a.metric for a in raised] == ["correction"]
    alert = raised[0]
    assert alert.observed == 0.35 and alert.samples == 20 and alert.baseline == 0.2
    assert alert.ci_low == pytest.approx(wilson_interval(7, 20)[0], abs=1e-6)
    assert (
        AuditEvent.objects.filter(
            action="monitoring.drift_alert", object_id=str(version.pk)
        ).count()
        == 1
    )
    # Again, and through every request path: nothing new.
    assert drift_check(version=version, channel=channel) == []
    for _ in range(3):
        assert api(personas["auditor"]).get("/api/monitoring/").status_code == 200
    assert DriftAlert.objects.count() == 1
    assert AuditEvent.objects.filter(action="monitoring.drift_alert").count() == 1
    audit_verify()


def test_it_mails_the_alert_after_commit(
    live, thresholds, settings, django_capture_on_commit_callbacks
):
    settings.SIGNOFF_MONITORING = {**settings.SIGNOFF_MONITORING, "ALERT_EMAILS": ["ml@x.test"]}
    version, channel = live
    reviewed(version, channel, "rejected", 10)
    reviewed(version, channel, "approved", 10)
    with django_capture_on_commit_callbacks(execute=True):
        raised = drift_check(version=version, channel=channel)
    assert [a.metric for a in raised] == ["rejection"]
    assert len(mail.outbox) == 1
    assert "rejection drift" in mail.outbox[0].subject
    assert mail.outbox[0].to == ["ml@x.test"]


def test_the_baseline_falls_back_to_the_evaluation_prediction(live, personas):
    from training_app.models import Evaluation

    version, channel = live
    Evaluation.objects.create(
        version=version,
        dataset_version=version.dataset_version,
        status="done",
        metrics={"candidate": {"exact_match": 0.75}, "reference": {}},
        finished_at=timezone.now(),
    )
    status = drift_status(version=version, channel=channel)
    assert status["metrics"]["correction"]["baseline"] == 0.25
    assert status["metrics"]["correction"]["baseline_source"] == "evaluation"
    assert status["metrics"]["rejection"]["baseline_source"] == "default"


# -- the audit sample ---------------------------------------------------------------------------


def test_the_audit_sample_routes_a_share_of_live_answers(live, personas):
    version, channel = live
    setting = channel_monitoring_save(
        user=personas["admin"], channel=channel, audit_sample_rate=0.25
    )
    payload = [
        {
            "external_id": f"live-{i}",
            "source": "channel:production",
            "model_name": "serving-stack",
            "model_version": version.name,
            "input": "Where is my claim?",
            "output": "In review.",
            "confidence": 0.99,
        }
        for i in range(400)
    ]
    outputs_ingest(payload=payload, actor=personas["ml_engineer"])
    sampled = Output.objects.filter(source="channel:production", status="pending").count()
    accepted = Output.objects.filter(source="channel:production", status="auto_accepted").count()
    assert sampled + accepted == 400
    assert 60 <= sampled <= 140  # 25 % of 400, deterministic per output
    assert Output.objects.filter(routing_rule=setting.audit_rule).count() == sampled
    # Changing the rate changes the same two rules, not new ones.
    again = channel_monitoring_save(user=personas["admin"], channel=channel, audit_sample_rate=0.5)
    assert (again.audit_rule_id, again.accept_rule_id) == (
        setting.audit_rule_id,
        setting.accept_rule_id,
    )


@pytest.mark.parametrize("role", ["ml_engineer", "lead", "deployer", "auditor", "outsider"])
def test_only_admins_set_the_audit_sample(api, personas, live, role):
    answer = api(personas[role]).put(
        "/api/monitoring/channels/production/settings/",
        {"audit_sample_rate": 0.1},
        format="json",
    )
    assert answer.status_code == 403


def test_bad_settings_name_the_field(api, personas, live):
    client = api(personas["admin"])
    url = "/api/monitoring/channels/production/settings/"
    answer = client.put(url, {"audit_sample_rate": 2}, format="json")
    assert answer.status_code == 400 and "audit_sample_rate" in json.dumps(answer.json())
    answer = client.put(
        url, {"audit_sample_rate": 0.1, "baseline": {"latency": 0.1}}, format="json"
    )
    assert answer.status_code == 400 and answer.json().get("field") == "baseline.latency"
    answer = client.put(url, {"audit_sample_rate": 0.1, "audit_queue": "nope"}, format="json")
    assert answer.status_code == 400 and answer.json().get("field") == "audit_queue"
    answer = client.put(url, {"audit_sample_rate": 0.1, "margin": 0.05}, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["margin"] == 0.05


# -- API, pages, command, permissions ----------------------------------------------------------


@pytest.mark.parametrize("role", VIEWERS)
def test_viewers_read_the_figures(api, personas, live, role):
    version, channel = live
    reviewed(version, channel, "approved", 3)
    reviewed(version, channel, "corrected", 1)
    answer = api(personas[role]).get(f"/api/monitoring/versions/{version.pk}/?bucket=week")
    assert answer.status_code == 200
    body = answer.json()
    assert body["reviewed"] == 4 and body["rates"]["correction"]["rate"] == 0.25
    assert body["channels"][0]["drift"]["metrics"]["correction"]["enough_samples"] is False
    overview = api(personas[role]).get("/api/monitoring/").json()
    assert overview["channels"][0]["version"]["name"] == version.name


@pytest.mark.parametrize("role", NOT_VIEWERS)
def test_others_are_refused_the_figures(api, client, personas, live, role):
    version, _ = live
    assert api(personas[role]).get("/api/monitoring/").status_code == 403
    assert api(personas[role]).get(f"/api/monitoring/versions/{version.pk}/").status_code == 403
    client.force_login(personas[role])
    assert client.get("/training/monitoring/").status_code == 403
    assert api().get("/api/monitoring/").status_code in (401, 403)


def test_bad_query_names_the_field(api, personas, live):
    answer = api(personas["admin"]).get("/api/monitoring/?bucket=month")
    assert answer.status_code == 400 and answer.json()["field"] == "bucket"
    answer = api(personas["admin"]).get("/api/monitoring/?since=yesterday")
    assert answer.status_code == 400 and answer.json()["field"] == "since"


def test_alerts_are_acknowledged_by_ml_engineers(api, personas, live, thresholds):
    version, channel = live
    reviewed(version, channel, "corrected", 20)
    (alert,) = drift_check(version=version, channel=channel)
    assert (
        api(personas["auditor"]).post(f"/api/monitoring/alerts/{alert.pk}/acknowledge/").status_code
        == 403
    )
    answer = api(personas["ml_engineer"]).post(f"/api/monitoring/alerts/{alert.pk}/acknowledge/")
    assert answer.status_code == 200 and answer.json()["status"] == "acknowledged"
    again = api(personas["ml_engineer"]).post(f"/api/monitoring/alerts/{alert.pk}/acknowledge/")
    assert again.status_code == 409
    listed = api(personas["auditor"]).get("/api/monitoring/alerts/?status=acknowledged").json()
    assert listed["count"] == 1 and [a["id"] for a in listed["results"]] == [alert.pk]


def test_the_page_shows_plots_and_the_banner(client, personas, live, thresholds):
    version, channel = live
    reviewed(version, channel, "corrected", 25)
    client.force_login(personas["auditor"])
    page = client.get("/training/monitoring/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "drift" in html.lower() and version.name in html
    detail = client.get(f"/training/monitoring/versions/{version.pk}/").content.decode()
    assert "<svg" in detail and "correction" in detail
    # Auditors read; the retraining form is for ML engineers and admins.
    assert "Retrain" not in detail or "retrain/" not in detail
    client.force_login(personas["ml_engineer"])
    detail = client.get(f"/training/monitoring/versions/{version.pk}/").content.decode()
    assert "retrain/" in detail


def test_the_command_prints_the_same_figures(live):
    version, channel = live
    reviewed(version, channel, "approved", 3)
    reviewed(version, channel, "rejected", 1)
    out = StringIO()
    call_command("monitoring_report", "--json", "--bucket", "week", stdout=out)
    data = json.loads(out.getvalue())
    (entry,) = data["channels"]
    assert entry["version"]["name"] == version.name
    assert entry["rates"]["rejection"]["rate"] == 0.25
    assert (
        entry["rates"]
        == counts_between(outputs_for(version=version, channel=channel), None, None).rates()
    )
    table = StringIO()
    call_command("monitoring_report", stdout=table)
    text = table.getvalue()
    assert "production" in text and version.name in text and "25.0%" in text


def test_reading_the_figures_writes_nothing(live, thresholds, api, client, personas):
    """Auditors read: opening the pages or the API never raises an alert (run_maintenance does)."""
    version, channel = live
    reviewed(version, channel, "corrected", 15)
    reviewed(version, channel, "approved", 5)
    events = AuditEvent.objects.count()
    assert api(personas["auditor"]).get("/api/monitoring/").status_code == 200
    assert (
        api(personas["auditor"]).get(f"/api/monitoring/versions/{version.pk}/").status_code == 200
    )
    client.force_login(personas["auditor"])
    assert client.get("/training/monitoring/").status_code == 200
    assert not DriftAlert.objects.exists()
    assert AuditEvent.objects.count() == events
    call_command("run_maintenance")
    assert DriftAlert.objects.count() == 1


def test_a_mail_server_that_is_down_does_not_break_the_check(
    live, thresholds, settings, django_capture_on_commit_callbacks
):
    settings.SIGNOFF_MONITORING = {**settings.SIGNOFF_MONITORING, "ALERT_EMAILS": ["ml@x.test"]}
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens there
    version, channel = live
    reviewed(version, channel, "rejected", 10)
    reviewed(version, channel, "approved", 10)
    with django_capture_on_commit_callbacks(execute=True):
        raised = drift_check(version=version, channel=channel)
    assert [a.metric for a in raised] == ["rejection"]
    assert DriftAlert.objects.count() == 1
