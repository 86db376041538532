"""Every API answer goes through a serializer, and the serializers answer exactly what the
hand-made dicts they replaced answered: the same keys in the same order, the same values and
types, datetimes written the same way (`+00:00` where `.isoformat()` wrote them, `Z` where DRF
did).

The `legacy_*` functions below are those dicts as they were written in the views before issue
16 (governance/api/views.py, monitoring/api/views.py, datasets_app/api/views.py,
reviews/api/views.py), kept here as the record of what clients got. Each test renders both with
DRF's JSON renderer and compares the bytes."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from datasets_app.models import DatasetVersion
from datasets_app.selectors import VersionDiff
from governance.models import Channel, Deployment, SignoffRequest
from governance.services import (
    channel_deploy,
    channel_rollback,
    signoff_decide,
    signoff_gate,
    signoff_request_create,
)
from governance.services.deployments import ADAPTER_DOWNLOADS
from monitoring.models import DriftAlert, Webhook, WebhookDelivery
from training_app.models import BaseModel

from .training_app.governance_helpers import finish_evaluations, make_channel, make_version


def rendered(data) -> bytes:
    return JSONRenderer().render(data)


def same_json(answer, expected) -> None:
    """`answer` (what the API or a serializer gave) written as `expected` would be, byte for
    byte: key order included."""
    assert rendered(answer).decode() == rendered(expected).decode()


# -- what the views answered before the serializers --------------------------------------------


def legacy_signoff_request(request: SignoffRequest) -> dict:
    approvals = request.approvals.select_related("approver").order_by("created_at")
    return {
        "id": request.pk,
        "version": {"id": str(request.version_id), "name": request.version.name},
        "channel": request.channel.name,
        "status": request.status,
        "policy": request.policy,
        "live_version": request.live_version.name if request.live_version_id else None,
        "requested_by": request.requested_by.get_username(),
        "created_at": request.created_at,
        "decided_at": request.decided_at,
        "gate": signoff_gate(request=request),
        "evaluations": [
            {
                "id": str(e.pk),
                "status": e.status,
                "split": e.split,
                "against": e.reference_label,
                "metrics": e.metrics,
                "samples": e.samples,
                "failure_reason": e.failure_reason,
            }
            for e in request.evaluations.select_related("reference").order_by("created_at")
        ],
        "approvals": [
            {
                "approver": a.approver.get_username(),
                "decision": a.decision,
                "comment": a.comment,
                "override": a.override,
                "override_reason": a.override_reason,
                "created_at": a.created_at,
            }
            for a in approvals
        ],
    }


def legacy_deployment(d: Deployment) -> dict:
    return {
        "id": d.pk,
        "action": d.action,
        "version": {"id": str(d.version_id), "name": d.version.name},
        "replaced": d.replaced.name if d.replaced_id else None,
        "by": d.actor.get_username(),
        "comment": d.comment,
        "manifest_digest": d.manifest_digest,
        "created_at": d.created_at,
    }


def legacy_channel(channel: Channel, base_url: str) -> dict:
    from governance.policy import channel_policy

    version = channel.live_version
    live = None
    if version is not None:
        live = {
            "id": str(version.pk),
            "name": version.name,
            "status": version.status,
            "base_model": version.base_model_ref,
            "adapter": {
                "format": "peft LoRA (safetensors)",
                "config": version.config.get("hyperparameters", {}),
                "files": [
                    {
                        "name": name,
                        "sha256": digest,
                        "url": base_url
                        + reverse("api-model-version-file", args=[version.pk, name]),
                    }
                    for name, digest in sorted(version.manifest.items())
                    if name in ADAPTER_DOWNLOADS
                ],
            },
            "deployed_at": channel.live_deployment.created_at if channel.live_deployment else None,
        }
    return {
        "name": channel.name,
        "description": channel.description,
        "policy": channel_policy(channel),
        "regression_cases": channel.regression_cases.count(),
        "live": live,
    }


def legacy_alert(alert: DriftAlert) -> dict:
    return {
        "id": alert.pk,
        "version": str(alert.version_id),
        "version_name": alert.version.name,
        "channel": alert.channel.name,
        "metric": alert.metric,
        "status": alert.status,
        "observed": alert.observed,
        "ci_low": alert.ci_low,
        "ci_high": alert.ci_high,
        "baseline": alert.baseline,
        "baseline_source": alert.baseline_source,
        "margin": alert.margin,
        "samples": alert.samples,
        "raised_at": alert.raised_at.isoformat(),
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by else None,
        "retrain_run": str(alert.retrain_run_id) if alert.retrain_run_id else None,
    }


def legacy_webhook(hook: Webhook, *, with_secret: bool = False) -> dict:
    data = {
        "id": hook.pk,
        "name": hook.name,
        "url": hook.url,
        "events": hook.events,
        "is_active": hook.is_active,
        "created_at": hook.created_at.isoformat(),
    }
    if with_secret:
        data["secret"] = hook.secret
    return data


def legacy_delivery(d: WebhookDelivery) -> dict:
    return {
        "id": str(d.pk),
        "webhook": d.webhook.name,
        "event": d.event,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.isoformat(),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "log": d.log,
        "created_at": d.created_at.isoformat(),
        "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
    }


def legacy_channel_monitoring(name: str, setting) -> dict:
    return {
        "channel": name,
        "audit_sample_rate": setting.audit_sample_rate,
        "audit_queue": setting.audit_queue.name if setting.audit_queue else None,
        "margin": setting.margin,
        "min_samples": setting.min_samples,
        "baseline": setting.baseline,
        "routing_rules": [setting.audit_rule_id, setting.accept_rule_id],
    }


def legacy_retrain(run, version) -> dict:
    return {
        "training_run": str(run.pk),
        "model_version": str(run.model_version.pk),
        "model_version_name": run.model_version.name,
        "parent_version": str(version.pk),
        "dataset_version": run.dataset_version_id,
    }


# -- a populated world -------------------------------------------------------------------------


def approved(personas, version, channel):
    request = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
    )
    finish_evaluations(request)
    signoff_decide(
        user=personas["approver"], request=request, decision="approve", comment="Read it."
    )
    version.refresh_from_db()
    return request


@pytest.fixture
def world(personas, settings, tmp_path):
    """Two versions signed off and deployed one after the other on `production`, the second
    rolled back; an empty `staging` channel; alerts, a webhook and its deliveries."""
    settings.SIGNOFF_TRAINING = {
        **settings.SIGNOFF_TRAINING,
        "MODELS_DIR": tmp_path / "models",
        "RUNS_DIR": tmp_path / "runs",
    }
    # A registered base model is only a row here: nothing loads it.
    BaseModel.objects.create(
        name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"],
        folder=str(tmp_path / "base"),
        hub_id="example/tiny",
        revision="main",
        weight_sha256={"model.safetensors": "ab" * 32},
    )
    dataset = DatasetVersion.objects.create(
        name="harbor", status="ready", created_by=personas["ml_engineer"], manifest_hash="0" * 64
    )
    first = make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, name="harbor-v1"
    )
    second = make_version(
        launcher=personas["ml_engineer"],
        dataset=dataset,
        tmp_path=tmp_path,
        name="harbor-v2",
        seed=1,
    )
    channel = make_channel("production")
    make_channel("staging")
    approved(personas, first, channel)
    channel_deploy(user=personas["deployer"], channel=channel, version=first, comment="go")
    request = approved(personas, second, channel)
    channel_deploy(user=personas["deployer"], channel=channel, version=second, comment="next")
    channel_rollback(user=personas["deployer"], channel=channel, comment="regressed")
    channel.refresh_from_db()

    now = timezone.now()
    open_alert = DriftAlert.objects.create(
        version=first, channel=channel, metric="rejection", baseline=0.05,
        baseline_source="channel", observed=0.25, ci_low=0.1, ci_high=0.45, margin=0.1,
        samples=20, window_start=now - timedelta(days=7),
    )  # fmt: skip
    seen_alert = DriftAlert.objects.create(
        version=first, channel=channel, metric="correction", status="acknowledged",
        baseline=0.2, baseline_source="evaluation", observed=0.35, ci_low=0.18, ci_high=0.57,
        margin=0.1, samples=20, acknowledged_by=personas["ml_engineer"],
        retrain_run=second.run, window_start=now - timedelta(days=7),
    )  # fmt: skip
    hook = Webhook.objects.create(
        name="ops", url="https://hooks.example/x", secret="s" * 32,
        events=["channel.deployed", "drift.alert"], created_by=personas["admin"],
    )  # fmt: skip
    delivered = WebhookDelivery.objects.create(
        webhook=hook, event="channel.deployed", payload={"channel": "production"},
        status="delivered", attempts=1, next_attempt_at=now, last_status_code=200,
        log=[{"at": now.isoformat(), "attempt": 1, "status_code": 200}], delivered_at=now,
    )  # fmt: skip
    pending = WebhookDelivery.objects.create(
        webhook=hook, event="drift.alert", payload={}, next_attempt_at=now + timedelta(minutes=5),
        attempts=1, last_error="connection refused",
    )  # fmt: skip
    return {
        "first": first,
        "second": second,
        "channel": channel,
        "request": request,
        "alerts": [open_alert, seen_alert],
        "hook": hook,
        "deliveries": [delivered, pending],
    }


def results(answer) -> list:
    """The list a paginated answer holds."""
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert list(body) == ["count", "next", "previous", "results"], body
    return body["results"]


# -- governance --------------------------------------------------------------------------------


def test_it_answers_a_signoff_request_as_before(api, personas, world):
    request = SignoffRequest.objects.get(pk=world["request"].pk)
    answer = api(personas["auditor"]).get(f"/api/signoff-requests/{request.pk}/")
    assert answer.status_code == 200
    expected = legacy_signoff_request(request)
    assert expected["approvals"] and expected["evaluations"] and expected["live_version"]
    same_json(answer.json(), expected)


def test_it_answers_channels_as_before(api, personas, world):
    client = api(personas["deployer"])
    base = "http://testserver"
    production = Channel.objects.get(name="production")
    assert production.live_version_id == world["first"].pk
    same_json(client.get("/api/channels/production/").json(), legacy_channel(production, base))
    listed = results(client.get("/api/channels/"))
    same_json(listed, [legacy_channel(c, base) for c in Channel.objects.order_by("name")])
    assert [c["live"] is None for c in listed] == [False, True]


def test_it_answers_the_deployment_history_as_before(api, personas, world):
    history = results(api(personas["auditor"]).get("/api/channels/production/history/"))
    expected = [legacy_deployment(d) for d in world["channel"].deployments.all()]
    assert [d["action"] for d in expected] == ["rollback", "deploy", "deploy"]
    assert expected[0]["replaced"] == "harbor-v2"
    same_json(history, expected)


def test_it_answers_deploy_and_rollback_as_before(api, personas, world):
    client = api(personas["deployer"])
    answer = client.post(
        "/api/channels/production/deploy/",
        {"version": str(world["second"].pk), "comment": "again"},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    same_json(answer.json(), legacy_deployment(Deployment.objects.get(pk=answer.json()["id"])))
    answer = client.post("/api/channels/production/rollback/", {"comment": "no"}, format="json")
    assert answer.status_code == 201, answer.content
    same_json(answer.json(), legacy_deployment(Deployment.objects.get(pk=answer.json()["id"])))


def test_the_compliance_report_goes_through_its_serializer_unchanged(world):
    from governance.api.serializers import ComplianceReportOutput
    from governance.compliance import compliance_report

    report = compliance_report(version=world["first"])
    same_json(ComplianceReportOutput(report).data, report)


def test_it_answers_the_compliance_report_with_every_section(api, personas, world):
    from governance.compliance import SECTIONS

    answer = api(personas["auditor"]).get(f"/api/model-versions/{world['first'].pk}/compliance/")
    assert answer.status_code == 200
    assert list(answer.json()) == ["header", *SECTIONS]


# -- monitoring --------------------------------------------------------------------------------


def test_it_answers_alerts_as_before(api, personas, world):
    client = api(personas["auditor"])
    everything = DriftAlert.objects.select_related("version", "channel", "acknowledged_by")
    same_json(results(client.get("/api/monitoring/alerts/")), [legacy_alert(a) for a in everything])
    same_json(
        results(client.get("/api/monitoring/alerts/?status=open")),
        [legacy_alert(a) for a in everything.filter(status="open")],
    )
    overview = client.get("/api/monitoring/").json()
    assert list(overview) == ["channels", "open_alerts"]
    same_json(overview["open_alerts"], [legacy_alert(a) for a in everything.filter(status="open")])
    figures = client.get(f"/api/monitoring/versions/{world['first'].pk}/").json()
    same_json(figures["alerts"], [legacy_alert(a) for a in everything])


def test_it_answers_an_acknowledged_alert_as_before(api, personas, world):
    alert = world["alerts"][0]
    answer = api(personas["ml_engineer"]).post(f"/api/monitoring/alerts/{alert.pk}/acknowledge/")
    assert answer.status_code == 200, answer.content
    alert = DriftAlert.objects.select_related("version", "channel", "acknowledged_by").get(
        pk=alert.pk
    )
    same_json(answer.json(), legacy_alert(alert))


def without_window_start(figures):
    """Figures with the drift window's start left out: it is counted back from now."""
    if isinstance(figures, dict):
        return {k: without_window_start(v) for k, v in figures.items() if k != "window_start"}
    if isinstance(figures, list):
        return [without_window_start(v) for v in figures]
    return figures


def test_it_answers_the_figures_as_before(api, personas, world):
    from monitoring.selectors import overview_figures, version_figures

    client = api(personas["auditor"])
    overview = client.get("/api/monitoring/?bucket=week").json()
    assert "window_start" in overview["channels"][0]["drift"]
    same_json(
        without_window_start(overview["channels"]),
        without_window_start(overview_figures(bucket="week")),
    )
    assert overview["channels"][0]["rates"]["approval"] == {
        "count": 0, "rate": None, "ci_low": 0.0, "ci_high": 1.0
    }  # fmt: skip
    version = world["first"]
    version.refresh_from_db()
    answer = client.get(f"/api/monitoring/versions/{version.pk}/?since=2026-01-01").json()
    expected = version_figures(
        version=version,
        bucket="day",
        since=timezone.make_aware(timezone.datetime(2026, 1, 1)),
    )
    answer.pop("alerts")
    same_json(without_window_start(answer), without_window_start(expected))


def test_it_answers_monitoring_settings_as_before(api, personas, world):
    from monitoring.models import ChannelMonitoring

    answer = api(personas["admin"]).put(
        "/api/monitoring/channels/production/settings/",
        {"audit_sample_rate": 0.05, "margin": 0.1, "min_samples": 30,
         "baseline": {"correction": 0.2}},
        format="json",
    )  # fmt: skip
    assert answer.status_code == 200, answer.content
    setting = ChannelMonitoring.objects.get(channel=world["channel"])
    same_json(answer.json(), legacy_channel_monitoring("production", setting))


def test_the_retrain_answer_goes_through_its_serializer_unchanged(world):
    from monitoring.api.serializers import RetrainOutput

    run, parent = world["second"].run, world["first"]
    same_json(RetrainOutput({"run": run, "parent": parent}).data, legacy_retrain(run, parent))


def test_it_answers_webhooks_and_deliveries_as_before(api, personas, world):
    client = api(personas["admin"])
    same_json(results(client.get("/api/webhooks/")), [legacy_webhook(world["hook"])])
    deliveries = WebhookDelivery.objects.select_related("webhook")
    same_json(
        results(client.get("/api/webhooks/deliveries/")), [legacy_delivery(d) for d in deliveries]
    )
    answer = client.post(
        "/api/webhooks/",
        {"name": "pager", "url": "https://hooks.example/y", "events": ["drift.alert"]},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    created = Webhook.objects.get(name="pager")
    same_json(answer.json(), legacy_webhook(created, with_secret=True))


# -- datasets and reviews ----------------------------------------------------------------------


def test_the_dataset_diff_goes_through_its_serializer_unchanged():
    from datasets_app.api.serializers import DatasetDiffSerializer

    diff = VersionDiff(added=[3, 4], removed=[1], changed=[2], unchanged=5)
    expected = {"version": 7, "other": 6, **diff.as_dict()}
    same_json(DatasetDiffSerializer(expected).data, expected)


# -- pagination --------------------------------------------------------------------------------

LISTS = [
    "/api/outputs/",
    "/api/reviews/",
    "/api/queues/",
    "/api/routing-rules/",
    "/api/audit/",
    "/api/datasets/",
    "/api/training-runs/",
    "/api/model-versions/",
    "/api/channels/",
    "/api/channels/production/history/",
    "/api/monitoring/alerts/",
    "/api/webhooks/",
    "/api/webhooks/deliveries/",
]


def test_every_list_answers_one_envelope(api, personas, world):
    client = api(personas["admin"])
    for url in LISTS:
        body = client.get(url).json()
        assert list(body) == ["count", "next", "previous", "results"], url
        assert body["count"] == len(body["results"]), url


def test_pages_follow_one_another_and_keep_the_filters(api, personas, world):
    client = api(personas["auditor"])
    first = client.get("/api/channels/production/history/?limit=2").json()
    assert first["count"] == 3 and len(first["results"]) == 2
    second = client.get(first["next"]).json()
    assert second["next"] is None and len(second["results"]) == 1
    assert [d["action"] for d in first["results"] + second["results"]] == [
        "rollback", "deploy", "deploy"
    ]  # fmt: skip
    page = client.get("/api/monitoring/alerts/?status=acknowledged&limit=1&offset=0").json()
    assert page["count"] == 1 and page["results"][0]["status"] == "acknowledged"
    assert client.get("/api/monitoring/alerts/?status=nope").status_code == 400
    runs = client.get("/api/training-runs/?limit=1").json()
    assert runs["count"] == 2 and "status=" not in runs["next"] and "offset=1" in runs["next"]


def test_a_page_holds_50_by_default_and_500_at_most():
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from core.api.pagination import Pagination

    def limit(query: str) -> int:
        return Pagination().get_limit(Request(APIRequestFactory().get(f"/api/outputs/{query}")))

    assert (limit(""), limit("?limit=7"), limit("?limit=100000")) == (50, 7, 500)
