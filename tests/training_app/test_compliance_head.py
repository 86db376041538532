"""Every form of the compliance report carries the audit chain head it verified, and
`manage.py verify_audit --report` anchors the log to it later."""

import io
import json
import zipfile
from datetime import datetime

import pytest
from django.core.management import CommandError, call_command

from core.models import AuditEvent
from tests.reviews.test_audit_head import forge_rewrite

from .governance_helpers import make_version


@pytest.fixture
def version(personas, make_dataset_version, tiny_base_model, training_dirs, tmp_path):
    dataset = make_dataset_version(2, 1)
    return make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)


def test_every_form_of_the_report_carries_the_chain_head(
    client, api, personas, version, tmp_path, capsys
):
    last = AuditEvent.objects.order_by("-seq").first()
    assert last is not None and last.seq > 1
    client.force_login(personas["auditor"])
    base = f"/training/versions/{version.pk}/compliance/"

    api_url = f"/api/model-versions/{version.pk}/compliance/"
    forms = {
        "page json": json.loads(client.get(f"{base}?format=json").content),
        "api json": api(personas["auditor"]).get(api_url).json(),
    }
    archive_bytes = client.get(f"{base}archive/").content
    archive = zipfile.ZipFile(io.BytesIO(archive_bytes))
    forms["zip report.json"] = json.loads(archive.read("report.json"))
    for form, report in forms.items():
        head = report["audit_chain"]["head"]
        assert (head["seq"], head["hash"]) == (last.seq, last.hash), form
        assert datetime.fromisoformat(head["event_at"]) == last.created_at, form
        assert datetime.fromisoformat(head["verified_at"]) >= last.created_at, form

    command = f"manage.py verify_audit --head {last.seq}:{last.hash}"
    for form, html in {
        "page": client.get(base).content.decode(),
        "zip report.html": archive.read("report.html").decode(),
    }.items():
        assert f"event #{last.seq}" in html and f"<code>{last.hash}</code>" in html, form
        assert command in html, form

    # The JSON and the archive, as an auditor keeps them, anchor the log later.
    saved_json = tmp_path / "report.json"
    saved_json.write_text(json.dumps(forms["api json"]))
    saved_zip = tmp_path / "compliance.zip"
    saved_zip.write_bytes(archive_bytes)
    for saved in (saved_json, saved_zip):
        call_command("verify_audit", report=str(saved))
        assert f"head held: event #{last.seq}" in capsys.readouterr().out

    forge_rewrite(1, {"rewritten": True})
    call_command("verify_audit")  # the rewritten chain verifies on its own
    for saved in (saved_json, saved_zip):
        with pytest.raises(CommandError) as refused:
            call_command("verify_audit", report=str(saved))
        assert str(refused.value).startswith(f"audit chain BROKEN at event #{last.seq}:")
        assert "rewritten since the head was taken" in str(refused.value)
