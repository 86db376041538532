"""Auditors read payloads, configurations and the chain's state as text and tables, never as
Python reprs; the audit log filters by date with date pickers; "Verify the chain" is a page."""

import re
from datetime import timedelta

import pytest
from django.db import transaction
from django.template import Context, Template
from django.utils import timezone

from core.audit import audit_append
from core.models import AuditEvent

from .governance_helpers import make_version

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = [pytest.mark.django_db, pytest.mark.once]

# A dict or list repr (quotes escaped in HTML), or a bare Python constant as a cell's value.
PYTHON_REPR = re.compile(r"\{&#x27;|\[&#x27;|\{'|\['|>\s*(?:True|False|None)\s*<")
DIGEST = "ab" * 32


@pytest.fixture
def events(personas):
    with transaction.atomic():
        for n in range(4):
            audit_append(
                actor=personas["lead"],
                action="output.resolved",
                object_type="output",
                object_id=n,
                payload={
                    "resolution": "corrected",
                    "by": "lead",
                    "review": n,
                    "labels": ["policy", "claims"],
                    "gate": {"passed": True, "problems": []},
                    "digest": DIGEST,
                },
            )
    return list(AuditEvent.objects.order_by("seq"))


@pytest.fixture
def auditor(client, personas):
    client.force_login(personas["auditor"])
    return client


def test_the_readable_filter_renders_a_payload_as_key_value_lines():
    payload = {
        "resolution": "approved",
        "guideline_version": None,
        "nested": {"ok": True},
        "tags": ["a", "b"],
        "hash": DIGEST,
    }
    html = Template("{% load readable %}{{ payload|readable }}").render(
        Context({"payload": payload})
    )
    assert "<dt>resolution</dt><dd>approved</dd>" in html
    assert "<dt>guideline version</dt>" in html and "—" in html
    assert '<dl class="payload"><div><dt>ok</dt><dd>yes</dd></div></dl>' in html
    assert "<dd>a, b</dd>" in html
    assert f'title="{DIGEST}">{DIGEST[:12]}…</code>' in html
    assert "{'" not in html


def test_the_audit_log_shows_payloads_as_definition_lists(auditor, events):
    html = auditor.get("/training/audit/").content.decode()
    assert "<dt>resolution</dt><dd>corrected</dd>" in html
    assert "<dt>labels</dt><dd>policy, claims</dd>" in html
    assert "<dt>passed</dt><dd>yes</dd>" in html
    assert f'title="{DIGEST}"' in html
    assert f'title="{events[-1].hash}"' in html  # the event's own hash, whole on hover
    assert not PYTHON_REPR.search(html)


def test_the_audit_log_filters_by_date_with_date_pickers(auditor, events):
    html = auditor.get("/training/audit/").content.decode()
    assert re.search(r'<input type="date" name="since"', html)
    assert re.search(r'<input type="date" name="until"', html)
    today = timezone.now().date()
    tomorrow = today + timedelta(days=1)
    html = auditor.get(f"/training/audit/?since={today}&until={tomorrow}").content.decode()
    assert f'value="{today}"' in html and f'value="{tomorrow}"' in html
    assert html.count("<dt>resolution</dt>") == 4
    html = auditor.get(f"/training/audit/?since={tomorrow}").content.decode()
    assert "No events match." in html
    # The export link carries the same query parameters.
    assert f"/api/audit/export/?since={tomorrow}" in html


def test_verify_the_chain_is_a_page_with_the_json_a_click_away(auditor, events):
    html = auditor.get("/training/audit/").content.decode()
    assert 'href="/training/audit/verify/"' in html
    answer = auditor.get("/training/audit/verify/")
    assert answer.status_code == 200
    html = answer.content.decode()
    assert "The chain is intact" in html
    assert "4 events" in html
    assert f"event #{events[-1].seq}" in html and events[-1].hash in html
    assert 'href="/api/audit/verify/"' in html
    assert auditor.get("/api/audit/verify/").json()["ok"] is True


def test_the_verify_page_names_the_event_where_the_chain_breaks(
    auditor, events, audit_guard_lifted
):
    AuditEvent.objects.filter(seq=3).update(payload={"resolution": "approved"})
    html = auditor.get("/training/audit/verify/").content.decode()
    assert "The chain is broken at event #3" in html
    assert "The chain is intact" not in html
    assert auditor.get("/api/audit/verify/").json()["broken_at"] == 3


@pytest.mark.parametrize("role", ["reviewer", "ml_engineer"])
def test_the_verify_page_is_for_auditors_and_admins(client, personas, role):
    client.force_login(personas[role])
    assert client.get("/training/audit/verify/").status_code == 403


def test_the_compliance_page_prints_no_python_reprs(
    client, personas, make_dataset_version, tiny_base_model, training_dirs, tmp_path
):
    dataset = make_dataset_version(2, 1)
    version = make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)
    client.force_login(personas["auditor"])
    html = client.get(f"/training/versions/{version.pk}/compliance/").content.decode()
    assert "<pre>{" not in html
    found = PYTHON_REPR.search(html)
    assert found is None, html[found.start() - 200 : found.end() + 50]
    assert '<dl class="payload">' in html
    assert "<dt>artifact verified now</dt>" in html
