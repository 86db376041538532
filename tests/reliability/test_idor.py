"""Insecure direct object references, through the API, the pages and the admin:

- nobody reviews, renews, releases, skips or undoes an item leased to (or decided by) someone
  else, whatever their role: a 403/404/409 and nothing changed;
- lifecycle fields (status, resolution, queue, lease, created_by, approval...) sent to a
  writable endpoint are refused or ignored: the row says what the service decided;
- whoever launched a training run or built its dataset cannot approve the resulting version,
  even holding the approver role and superuser rights, by page, API or admin;
- an auditor who is staff reads the admin but no add/change/delete of any registered model
  goes through, and no unsafe API or page method does either.
"""

import itertools
import json
import uuid
from urllib.parse import urlencode

import pytest
from django.contrib import admin
from django.db import models
from django.test import Client
from django.urls import reverse

from core.models import AuditEvent
from datasets_app.models import DatasetVersion
from governance.models import Approval, Channel, SignoffRequest
from governance.services import signoff_request_create
from monitoring.models import DriftAlert, Webhook
from reviews.models import Lease, Output, Queue, Review, RoutingRule
from training_app.models import ModelVersion, TrainingRun

from ..factories import output_payload
from ..training_app.governance_helpers import finish_evaluations, make_version
from .conftest import make_dataset
from .test_permission_matrix import BODIES, TABLE, url_patterns

pytestmark = pytest.mark.django_db

WATCHED = (
    AuditEvent,
    Output,
    Review,
    Lease,
    Queue,
    RoutingRule,
    DatasetVersion,
    TrainingRun,
    ModelVersion,
    SignoffRequest,
    Approval,
    Channel,
    DriftAlert,
    Webhook,
)


def snapshot() -> dict:
    """Every row of the watched tables, as values: any write shows up as a difference."""
    return {
        model.__name__: sorted(map(repr, model.objects.order_by("pk").values_list()))
        for model in WATCHED
    }


def changed(before: dict, after: dict) -> list[str]:
    return [name for name in before if before[name] != after[name]]


def api_client(user) -> Client:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def page_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_as(person, kind: str, url: str, body: dict):
    if kind == "api":
        return api_client(person).post(url, body, format="json")
    return page_client(person).post(url, body)


# -- leases and reviews that belong to someone else --------------------------------------------

# The lease in `world` is held by "reviewer"; these all may work the queue.
INTRUDERS = ["reviewer2", "lead", "admin"]


def lease_actions(lease_id):
    return [
        ("api submit", "api", "/api/reviews/", {"lease": str(lease_id), "decision": "approve"}),
        (
            "api submit with a correction",
            "api",
            "/api/reviews/",
            {"lease": str(lease_id), "decision": "correct", "corrected_output": "Mine now."},
        ),
        ("api renew", "api", f"/api/leases/{lease_id}/renew/", {}),
        ("api release", "api", f"/api/leases/{lease_id}/release/", {}),
        ("page decide", "page", f"/leases/{lease_id}/decide/", {"decision": "approve"}),
        ("page skip", "page", f"/leases/{lease_id}/skip/", {}),
        ("page renew", "page", f"/leases/{lease_id}/renew/", {}),
    ]


def test_nobody_acts_on_a_lease_held_by_someone_else(world):
    failures = []
    for intruder, (name, kind, url, body) in itertools.product(
        INTRUDERS, lease_actions(world.lease.pk)
    ):
        person = world.people[intruder]
        name = f"{intruder}: {name}"
        before = snapshot()
        response = post_as(person, kind, url, body)
        if response.status_code not in (403, 404, 409):
            failures.append(f"{name}: {response.status_code} {response.content[:200]!r}")
        if writes := changed(before, snapshot()):
            failures.append(f"{name}: wrote {writes}")
    assert failures == [], "\n".join(failures)
    world.lease.refresh_from_db()
    assert world.lease.ended_at is None and world.lease.renewals == 0
    output = Output.objects.get(pk=world.lease.output_id)
    assert output.lease_id == world.lease.pk and output.status == "pending"


def test_the_holder_can_still_decide_after_the_attempts(world):
    for intruder in INTRUDERS:
        for _name, kind, url, body in lease_actions(world.lease.pk):
            post_as(world.people[intruder], kind, url, body)
    answer = api_client(world.people["reviewer"]).post(
        "/api/reviews/", {"lease": str(world.lease.pk), "decision": "approve"}, format="json"
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["reviewer"] == "reviewer"


def test_an_unknown_lease_id_is_404_everywhere(world):
    ghost = uuid.uuid4()
    before = snapshot()
    for name, kind, url, body in lease_actions(ghost):
        person = world.people["reviewer"]
        response = post_as(person, kind, url, body)
        assert response.status_code == 404, (name, response.status_code)
    assert changed(before, snapshot()) == []


def test_nobody_undoes_someone_elses_decision(world):
    before = snapshot()
    for intruder in ("reviewer", "lead", "admin"):
        person = world.people[intruder]
        answer = api_client(person).post(f"/api/reviews/{world.review.pk}/undo/")
        assert answer.status_code == 403, (intruder, answer.content)
        page = page_client(person).post(f"/reviews/{world.review.pk}/undo/", follow=True)
        assert page.status_code == 200 and b"Could not undo" in page.content, intruder
    assert changed(before, snapshot()) == []


# -- mass assignment of lifecycle fields --------------------------------------------------------

INGEST_INJECTIONS = {
    "status": "resolved",
    "resolution": "approved",
    "resolved_by": "lead",
    "final_output": "Approved by nobody.",
    "is_gold": True,
    "reviews_done": 3,
    "lease": str(uuid.uuid4()),
    "lease_id": str(uuid.uuid4()),
    "locked_at": "2020-01-01T00:00:00Z",
    "resolved_at": "2020-01-01T00:00:00Z",
    "routing_rule": 1,
    "id": 424242,
}


def test_ingest_refuses_or_ignores_lifecycle_fields(world):
    client = api_client(world.people["ml_engineer"])
    for n, (field, value) in enumerate(sorted(INGEST_INJECTIONS.items())):
        row = output_payload(90 + n) | {field: value}
        before = snapshot()
        answer = client.post("/api/outputs/", [row], format="json")
        assert answer.status_code < 500, (field, answer.content)
        if answer.status_code >= 400:
            assert changed(before, snapshot()) == [], field
            continue
        stored = Output.objects.get(external_id=row["external_id"])
        assert stored.pk != 424242 and stored.status == "pending", field
        assert stored.resolution == "" and not stored.is_gold, field
        assert stored.reviews_done == 0 and stored.lease_id is None, field


def test_queue_create_and_update_ignore_kind_id_and_created_at(world):
    lead = api_client(world.people["lead"])
    injected = {"kind": "escalation", "id": 424242, "created_at": "2000-01-01T00:00:00Z"}
    created = lead.post("/api/queues/", {"name": "fresh", **injected}, format="json")
    assert created.status_code in (201, 400), created.content
    if created.status_code == 201:
        queue = Queue.objects.get(name="fresh")
        assert queue.kind == "review" and queue.pk != 424242 and queue.created_at.year > 2000
    before = Queue.objects.filter(pk=world.queue.pk).values().get()
    patched = lead.patch(
        f"/api/queues/{world.queue.pk}/", {"description": "changed", **injected}, format="json"
    )
    assert patched.status_code in (200, 400), patched.content
    after = Queue.objects.filter(pk=world.queue.pk).values().get()
    assert (after["kind"], after["created_at"]) == (before["kind"], before["created_at"])


def test_routing_rule_create_and_update_ignore_id_and_created_at(world):
    lead = api_client(world.people["lead"])
    injected = {"id": 424242, "created_at": "2000-01-01T00:00:00Z", "created_by": 1}
    body = {"name": "injected", "position": 9, "action": "route", "queue": world.queue.pk}
    created = lead.post("/api/routing-rules/", {**body, **injected}, format="json")
    assert created.status_code in (201, 400), created.content
    if created.status_code == 201:
        rule = RoutingRule.objects.get(name="injected")
        assert rule.pk != 424242 and rule.created_at.year > 2000
    before = RoutingRule.objects.filter(pk=world.rule.pk).values().get()
    patched = lead.patch(
        f"/api/routing-rules/{world.rule.pk}/", {"name": "renamed", **injected}, format="json"
    )
    assert patched.status_code in (200, 400), patched.content
    after = RoutingRule.objects.filter(pk=world.rule.pk).values().get()
    assert (after["id"], after["created_at"]) == (before["id"], before["created_at"])


def test_a_review_cannot_name_its_reviewer_output_stage_or_gold_agreement(world):
    holder = world.people["reviewer"]
    other_output = world.outputs[-1]
    body = {
        "lease": str(world.lease.pk),
        "decision": "approve",
        "reviewer": world.people["lead"].pk,
        "output": other_output.pk,
        "queue": world.queue.pk,
        "stage": "lead",
        "agrees_with_gold": True,
        "original_output": "not what the model said",
        "diff": "forged",
        "created_at": "2000-01-01T00:00:00Z",
        "status": "resolved",
        "resolution": "rejected",
    }
    answer = api_client(holder).post("/api/reviews/", body, format="json")
    assert answer.status_code == 201, answer.content
    review = Review.objects.get(pk=answer.json()["id"])
    assert review.reviewer_id == holder.pk and review.output_id == world.lease.output_id
    assert review.stage != "lead" and review.original_output != "not what the model said"
    assert review.diff != "forged" and review.created_at.year > 2000
    other_output.refresh_from_db()
    assert other_output.status == "pending" and other_output.reviews_done == 0
    resolved = Output.objects.get(pk=world.lease.output_id)
    assert resolved.resolution != "rejected"


def test_marking_gold_changes_nothing_but_the_flag(world):
    output = Output.objects.get(pk=world.review.output_id)
    before = Output.objects.filter(pk=output.pk).values().get()
    body = {"is_gold": True, "status": "pending", "resolution": "rejected", "queue": 1}
    answer = api_client(world.people["lead"]).post(
        f"/api/outputs/{output.pk}/gold/", body, format="json"
    )
    assert answer.status_code in (200, 400), answer.content
    after = Output.objects.filter(pk=output.pk).values().get()
    for key in ("status", "resolution", "queue_id", "final_output", "resolved_by"):
        assert after[key] == before[key], key


def test_a_dataset_build_request_cannot_set_its_outcome(world):
    body = {
        "name": "injected",
        "run": "background",
        "status": "ready",
        "manifest_hash": "f" * 64,
        "created_by": world.people["approver"].pk,
        "counts": {"train": 1000},
        "built_at": "2000-01-01T00:00:00Z",
    }
    answer = api_client(world.people["ml_engineer"]).post("/api/datasets/", body, format="json")
    assert answer.status_code in (202, 400), answer.content
    if answer.status_code == 202:
        version = DatasetVersion.objects.get(pk=answer.json()["id"])
        assert version.status == "building" and version.manifest_hash != "f" * 64
        assert version.created_by_id == world.people["ml_engineer"].pk
        assert version.built_at is None and "train" not in (version.counts or {})


def test_a_training_run_request_cannot_set_its_outcome(world):
    engineer = world.people["ml_engineer"]
    body = {
        "dataset_version": world.dataset.pk,
        "hyperparameters": {"num_epochs": 1},
        "status": "succeeded",
        "created_by": world.people["approver"].pk,
        "attempts": 9,
        "model_version": str(world.approved.pk),
        "id": str(uuid.uuid4()),
    }
    answer = api_client(engineer).post("/api/training-runs/", body, format="json")
    assert answer.status_code == 201, answer.content
    run = TrainingRun.objects.get(pk=answer.json()["id"])
    assert run.pk != uuid.UUID(body["id"]) and run.status == "queued"
    assert run.created_by_id == engineer.pk and run.attempts == 0
    version = ModelVersion.objects.get(run=run)
    assert version.pk != world.approved.pk and version.status not in ("approved", "deployed")


def test_hyperparameters_cannot_carry_lifecycle_fields(world):
    body = {"dataset_version": world.dataset.pk, "hyperparameters": {"status": "approved"}}
    before = snapshot()
    answer = api_client(world.people["ml_engineer"]).post(
        "/api/training-runs/", body, format="json"
    )
    assert answer.status_code in (201, 400), answer.content
    if answer.status_code == 400:
        assert changed(before, snapshot()) == []
    else:
        assert ModelVersion.objects.get(run_id=answer.json()["id"]).status != "approved"


def test_a_signoff_request_cannot_arrive_approved(world, training_folders):
    engineer = world.people["ml_engineer"]
    version = make_version(
        launcher=engineer, dataset=world.dataset, tmp_path=training_folders, seed=7, name="inj"
    )
    body = {
        "channel": world.spare_channel.name,
        "status": "approved",
        "requested_by": world.people["approver"].pk,
        "approvals_required": 0,
        "version": str(world.approved.pk),
    }
    answer = api_client(engineer).post(
        f"/api/model-versions/{version.pk}/signoff-requests/", body, format="json"
    )
    assert answer.status_code == 201, answer.content
    request = SignoffRequest.objects.get(pk=answer.json()["id"])
    assert request.status == "open" and request.requested_by_id == engineer.pk
    assert request.version_id == version.pk
    version.refresh_from_db()
    assert version.status == "awaiting_signoff"


def test_a_rejection_cannot_be_turned_into_an_approval_by_extra_fields(world):
    finish_evaluations(world.signoff)
    body = {
        "decision": "reject",
        "comment": "Wrong tone.",
        "status": "approved",
        "approver": world.people["admin"].pk,
        "version_status": "approved",
    }
    answer = api_client(world.people["approver"]).post(
        f"/api/signoff-requests/{world.signoff.pk}/decisions/", body, format="json"
    )
    assert answer.status_code == 201, answer.content
    world.signoff.refresh_from_db()
    world.version.refresh_from_db()
    assert world.signoff.status == "rejected" and world.version.status == "rejected"
    assert Approval.objects.get(request=world.signoff).approver_id == world.people["approver"].pk


def test_a_deploy_cannot_name_a_different_live_version(world):
    body = {
        "version": str(world.approved.pk),
        "live_version": str(world.version.pk),
        "status": "deployed",
        "actor": world.people["admin"].pk,
    }
    answer = api_client(world.people["deployer"]).post(
        f"/api/channels/{world.spare_channel.name}/deploy/", body, format="json"
    )
    assert answer.status_code in (200, 201, 409), answer.content
    channel = Channel.objects.get(pk=world.spare_channel.pk)
    assert channel.live_version_id in (None, world.approved.pk)
    world.version.refresh_from_db()
    assert world.version.status == "evaluated" or world.version.status == "awaiting_signoff"


def test_acknowledging_an_alert_cannot_close_it_or_name_someone_else(world):
    body = {"status": "resolved", "acknowledged_by": world.people["admin"].pk}
    answer = api_client(world.people["ml_engineer"]).post(
        reverse("api-drift-alert-acknowledge", kwargs={"pk": world.alert.pk}), body, format="json"
    )
    assert answer.status_code == 200, answer.content
    alert = DriftAlert.objects.get(pk=world.alert.pk)
    assert alert.status == "acknowledged"
    assert alert.acknowledged_by_id == world.people["ml_engineer"].pk


def test_a_webhook_cannot_name_its_creator_or_id(world):
    body = {
        "name": "hook",
        "url": "https://example.invalid/hook",
        "events": ["model_version.approved"],
        "id": 424242,
        "created_by": world.people["auditor"].pk,
        "created_at": "2000-01-01T00:00:00Z",
    }
    answer = api_client(world.people["admin"]).post("/api/webhooks/", body, format="json")
    assert answer.status_code in (201, 400), answer.content
    if answer.status_code == 201:
        hook = Webhook.objects.get(name="hook")
        assert hook.pk != 424242 and hook.created_at.year > 2000


# -- no self-approval ------------------------------------------------------------------------


@pytest.fixture
def conflicted(world, roles, make_user, training_folders):
    """A version whose dataset was built by `builder` and whose run was launched by `launcher`:
    both are also approvers, staff and superusers, i.e. as powerful as anyone gets."""
    builder = make_user("ml_engineer", username="builder")
    launcher = make_user("ml_engineer", username="launcher")
    for person in (builder, launcher):
        person.groups.add(roles["approver"])
        person.is_staff = person.is_superuser = True
        person.save()
    dataset = make_dataset(builder, name="built-by-builder")
    version = make_version(
        launcher=launcher, dataset=dataset, tmp_path=training_folders, seed=11, name="mine"
    )
    request = signoff_request_create(
        user=launcher, version=version, channel=world.spare_channel, enqueue=False
    )
    finish_evaluations(request)
    return {"builder": builder, "launcher": launcher, "version": version, "request": request}


def _approve_by_api(person, request, version):
    return api_client(person).post(
        f"/api/signoff-requests/{request.pk}/decisions/",
        {"decision": "approve", "comment": "Mine, and fine."},
        format="json",
    )


def _approve_by_page(person, request, version):
    return page_client(person).post(
        reverse("training:signoff-decide", kwargs={"pk": request.pk}),
        {"decision": "approve", "comment": "Mine, and fine."},
    )


def _approve_by_admin_approval(person, request, version):
    return page_client(person).post(
        "/admin/governance/approval/add/",
        {"request": request.pk, "approver": person.pk, "decision": "approve", "comment": "ok"},
    )


def _approve_by_admin_version(person, request, version):
    return page_client(person).post(
        f"/admin/training_app/modelversion/{version.pk}/change/", {"status": "approved"}
    )


def _approve_by_admin_request(person, request, version):
    return page_client(person).post(
        f"/admin/governance/signoffrequest/{request.pk}/change/", {"status": "approved"}
    )


ROUTES = [
    _approve_by_api,
    _approve_by_page,
    _approve_by_admin_approval,
    _approve_by_admin_version,
    _approve_by_admin_request,
]


@pytest.mark.parametrize("who", ["builder", "launcher"])
def test_nobody_approves_their_own_run_or_dataset(conflicted, who):
    person, request, version = conflicted[who], conflicted["request"], conflicted["version"]
    for route in ROUTES:
        before = snapshot()
        answer = route(person, request, version)
        assert answer.status_code == 403, (route.__name__, answer.status_code, answer.content[:300])
        assert changed(before, snapshot()) == [], route.__name__
    version.refresh_from_db()
    request.refresh_from_db()
    assert version.status == "awaiting_signoff" and request.status == "open"


def test_an_independent_approver_still_can(conflicted, world):
    answer = _approve_by_api(world.people["approver"], conflicted["request"], None)
    assert answer.status_code == 201, answer.content
    conflicted["version"].refresh_from_db()
    assert conflicted["version"].status == "approved"


# -- the auditor reads, never writes ------------------------------------------------------------


@pytest.fixture
def staff_auditor(world):
    auditor = world.people["auditor"]
    auditor.is_staff = True
    auditor.save()
    return auditor


def _any_object(model: type[models.Model]):
    return model._default_manager.order_by("pk").first()


def _form_data(model: type[models.Model], obj) -> dict:
    """A plausible body for the model's admin form: its own values, one text changed."""
    data = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or not field.editable:
            continue
        value = field.value_from_object(obj) if obj is not None else None
        if isinstance(field, models.ForeignKey):
            value = getattr(obj, field.attname, None) if obj is not None else None
        if value is None:
            continue
        if isinstance(field, models.CharField | models.TextField) and not field.choices:
            value = f"{value}-by-auditor"
        data[field.name] = value if not isinstance(value, dict | list) else repr(value)
    return data


def test_a_staff_auditor_reads_the_admin(staff_auditor):
    client = page_client(staff_auditor)
    assert client.get("/admin/").status_code == 200
    readable = []
    for model in admin.site._registry:
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        status = client.get(url).status_code
        assert status in (200, 403), (url, status)
        can_view = staff_auditor.has_perm(f"{opts.app_label}.view_{opts.model_name}")
        assert (status == 200) == can_view, (url, status, can_view)
        readable.append(status == 200)
    assert any(readable), "the auditor can read nothing in the admin"


def test_a_staff_auditor_can_add_change_or_delete_nothing_in_the_admin(world, staff_auditor):
    client = page_client(staff_auditor)
    failures = []
    counts_before = {m: m._default_manager.count() for m in admin.site._registry}
    before = snapshot()
    for model in admin.site._registry:
        opts = model._meta
        name = f"{opts.app_label}_{opts.model_name}"
        obj = _any_object(model)
        attempts = [("add", reverse(f"admin:{name}_add"), _form_data(model, obj))]
        if obj is not None:
            attempts += [
                ("change", reverse(f"admin:{name}_change", args=[obj.pk]), _form_data(model, obj)),
                ("delete", reverse(f"admin:{name}_delete", args=[obj.pk]), {"post": "yes"}),
                (
                    "bulk delete",
                    reverse(f"admin:{name}_changelist"),
                    {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
                ),
            ]
        for what, url, data in attempts:
            status = client.post(url, data).status_code
            # A bulk action the user may not run is simply not offered: the changelist shows
            # again (200) with nothing done; the counts below prove it.
            if status != 403 and not (what == "bulk delete" and status == 200):
                failures.append(f"{what} {url}: {status}")
    assert failures == [], "\n".join(failures)
    assert {m: m._default_manager.count() for m in admin.site._registry} == counts_before
    assert changed(before, snapshot()) == []


UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def unsafe_requests(world, who: str, *, only=None):
    """(method, url, name, response) for every pattern the project serves x every unsafe
    method, with the permission matrix's arguments and valid bodies where it has them (so that
    a refusal is about the caller, not the body)."""
    person = world.people[who]
    for route, name, _pattern in url_patterns():
        if route.startswith(("admin/", "accounts/")) or (only and name not in only):
            continue
        assert name in TABLE, f"{route} has no row in the permission matrix"
        url = reverse(name, kwargs=TABLE[name][0](world, who))
        body = BODIES.get(name, lambda world: {})(world)
        for method in UNSAFE:
            if url.startswith("/api/"):
                response = api_client(person).generic(
                    method, url, json.dumps(body), content_type="application/json"
                )
            else:
                response = page_client(person).generic(
                    method, url, urlencode(body), content_type="application/x-www-form-urlencoded"
                )
            yield method, url, name, response


# Pages that only show something (GET in the permission matrix, nothing else).
READ_PAGES = {
    name
    for name, (_kwargs, methods) in TABLE.items()
    if set(methods) == {"GET"} and not name.startswith("api") and name not in ("schema",)
}


def test_the_auditor_is_refused_every_unsafe_method_and_writes_nothing(world):
    """API: 401/403/405. Pages the auditor may not post to: 403/405; the undo page, open to
    anyone signed in, redirects with "Could not undo" (its service refuses someone else's
    review). Read pages are the test below. Nothing anywhere writes a row or answers 5xx."""
    failures = []
    before = snapshot()  # once around the whole sweep: a snapshot per request costs 40 s
    for method, url, name, response in unsafe_requests(world, "auditor"):
        status = response.status_code
        if status >= 500:
            failures.append(f"{method} {url}: {status}")
        elif url.startswith("/api/"):
            if status not in (401, 403, 405):
                failures.append(f"{method} {url}: {status}")
        elif name == "review-undo" and method == "POST":
            if not (status == 302 and "/reviews/mine/" in response["Location"]):
                failures.append(f"{method} {url}: {status}")
        elif name not in READ_PAGES and status not in (403, 405):
            failures.append(f"{method} {url}: {status}")
    assert failures == [], "\n".join(failures)
    assert changed(before, snapshot()) == []


def test_read_only_pages_answer_unsafe_methods_with_405(world):
    failures = []
    for method, url, _name, response in unsafe_requests(world, "auditor", only=READ_PAGES):
        if response.status_code not in (403, 405):
            failures.append(f"{method} {url}: {response.status_code}")
    assert failures == [], "\n".join(failures)
