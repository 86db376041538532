"""From reviewed outputs to a released version and its compliance report; the model server
answering for a channel, its answers recorded and routed into review."""

import json
import subprocess
import sys
import threading
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from datasets_app.services import dataset_version_build
from demo.data import SYSTEM_PROMPT, demo_outputs
from governance.compliance import SECTIONS
from governance.services import channel_deploy, signoff_decide, signoff_request_create
from reviews.models import Output, Queue
from reviews.services import outputs_ingest, queue_claim_next, queue_save, review_submit
from training_app.models import Evaluation, ModelVersion
from training_app.services import evaluation_execute, training_run_create, training_run_execute

from ..waiting import REQUEST_SECONDS
from .governance_helpers import make_channel, make_version

TINY = {
    "num_epochs": 1,
    "batch_size": 4,
    "max_length": 96,
    "lora_r": 4,
    "lora_alpha": 8,
    "target_modules": ["q_proj", "v_proj"],
}


def review_everything(queue: Queue, reviewers: list) -> int:
    """Each reviewer works the queue until it has nothing left for them."""
    done = 0
    for index, reviewer in enumerate(reviewers):
        while (lease := queue_claim_next(queue=queue, user=reviewer)) is not None:
            item = lease.output
            decision = "correct" if (item.pk + index) % 5 == 0 else "approve"
            review_submit(
                lease_id=lease.pk,
                user=reviewer,
                decision=decision,
                corrected_output=(
                    item.output_text + " Next step: call us." if decision == "correct" else ""
                ),
            )
            done += 1
    return done


@pytest.mark.django_db(transaction=True)
def test_the_compliance_report_of_a_version_built_from_reviewed_outputs(
    personas, make_user, tiny_base_model, training_dirs, client
):
    admin = personas["admin"]
    queue = queue_save(user=admin, name="double", required_reviews=2, gold_rate=0.0)
    outputs_ingest(
        payload=[{**o, "queue": "double"} for o in demo_outputs(14, seed=3)], actor=admin
    )
    reviewers = [personas["reviewer"], personas["reviewer2"]]
    assert review_everything(queue, reviewers) >= 28
    builder = make_user("ml_engineer", username="builder")
    dataset = dataset_version_build(user=builder, name="e2e", eval_fraction=0.25, seed=1)
    assert dataset.status == "ready"

    launcher = personas["ml_engineer"]
    run = training_run_create(
        user=launcher, dataset_version=dataset, hyperparameters=TINY, enqueue=False
    )
    training_run_execute(run_id=run.pk, owner="test", evaluate="inline")
    version = ModelVersion.objects.get(run=run)
    assert version.status == "evaluated"

    channel = make_channel("production")
    request = signoff_request_create(user=launcher, version=version, channel=channel, enqueue=False)
    # The channel's first release: compared with the bare base on both splits.
    for evaluation in Evaluation.objects.filter(signoff_request=request):
        evaluation_execute(evaluation_id=evaluation.pk, owner="test")
    evaluations = {e.split: e for e in Evaluation.objects.filter(signoff_request=request)}
    assert {(split, e.status, e.reference_id) for split, e in evaluations.items()} == {
        ("eval", "done", None),
        ("regression", "done", None),
    }
    regression = evaluations["regression"]
    assert regression.metrics["examples"] == 2 and len(regression.samples) == 2
    signoff_decide(
        user=personas["approver"], request=request, decision="approve", comment="Read it."
    )
    channel_deploy(user=personas["deployer"], channel=channel, version=version, comment="go")

    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(personas["auditor"])
    report = api.get(f"/api/model-versions/{version.pk}/compliance/").json()
    assert list(report["header"]["framework_map"]) == SECTIONS
    for section in SECTIONS:
        assert report[section] not in (None, {}, []), section
        refs = report["header"]["framework_map"][section]
        assert any("Art. 12" in r or "Art. 14" in r for r in refs["eu_ai_act"])
        assert refs["nist_ai_rmf"]
    assert report["identity"]["artifact_verified_now"] is True
    assert report["identity"]["adapter_manifest"] == version.manifest
    assert report["training"]["environment"]["libraries"]["torch"]
    assert report["dataset"]["manifest_hash"] == dataset.manifest_hash
    assert report["dataset"]["pii_counts"] is not None and report["dataset"]["pipeline_removals"]
    assert report["examples"]["by_queue"] == {"double": report["examples"]["total"]}
    assert {r["reviewer"] for r in report["reviewers"]} == {"reviewer", "reviewer2"}
    assert report["agreement"]["double_reviewed_items"] > 0
    assert {e["split"] for e in report["evaluations"]} == {"eval", "regression"}
    decision = report["approvals"][0]["decisions"][0]
    assert decision["approver"] == "approver" and decision["comment"] == "Read it."
    assert decision["gate_compared_with"]["kind"] == "base"
    assert report["deployments"][0]["action"] == "deploy"
    assert report["audit_chain"]["verified"] is True
    assert "model_version.deployed" in {
        e["action"] for e in report["audit_chain"]["version_events"]
    }
    assert report["monitoring"]["released_at"]

    archive = zipfile.ZipFile(
        BytesIO(api.get(f"/api/model-versions/{version.pk}/compliance/archive/").content)
    )
    assert set(archive.namelist()) >= {
        "report.json", "report.html", "data_card.md", "dataset_manifest.jsonl",
        "adapter_manifest.json", "adapter_SHA256SUMS",
    }  # fmt: skip
    assert json.loads(archive.read("report.json"))["identity"]["name"] == version.name
    sums = archive.read("adapter_SHA256SUMS").decode()
    assert version.manifest["adapter_model.safetensors"] in sums

    client.force_login(personas["auditor"])
    page = client.get(f"/training/versions/{version.pk}/compliance/").content.decode()
    assert "Art. 12" in page and "Art. 14" in page and "NIST" in page and "reviewer2" in page
    lineage = client.get(f"/training/versions/{version.pk}/lineage/").content.decode()
    example_id = dataset.members.first().example_id
    assert f"/training/examples/{example_id}/lineage/" in lineage
    back = client.get(f"/training/examples/{example_id}/lineage/").content.decode()
    assert version.name in back and "reviewer2" in back


# -- serving -----------------------------------------------------------------------------------


@pytest.fixture
def model_server(settings):
    from serving.server import make_server

    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    settings.SIGNOFF_GOVERNANCE = {
        **settings.SIGNOFF_GOVERNANCE,
        "SERVING_URL": url,
        # The web side's wait for an answer: a first answer loads the model, slow under load.
        "SERVING_TIMEOUT_SECONDS": REQUEST_SECONDS,
    }
    yield url
    server.shutdown()
    server.server_close()


def live_version(personas, make_dataset_version, tmp_path, base_dir, seed=0, channel=None):
    dataset = make_dataset_version(2, 1, name=f"serve{seed}")
    version = make_version(
        launcher=personas["ml_engineer"],
        dataset=dataset,
        tmp_path=tmp_path,
        base_dir=base_dir,
        seed=seed,
    )
    channel = channel or make_channel("production")
    request = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
    )
    Evaluation.objects.filter(signoff_request=request).update(
        status="done", metrics={"candidate": {}, "reference": {}}
    )
    signoff_decide(user=personas["approver"], request=request, decision="approve", comment="ok")
    channel_deploy(user=personas["deployer"], channel=channel, version=version)
    return version, channel


@pytest.mark.django_db(transaction=True)
def test_generate_answers_with_the_live_version_and_routes_the_answer(
    api, personas, make_dataset_version, tiny_base_model, tiny_model_dir, training_dirs,
    tmp_path, model_server,
):  # fmt: skip
    from serving.client import call

    version, channel = live_version(personas, make_dataset_version, tmp_path, tiny_model_dir)
    client = api(personas["ml_engineer"])
    url = "/api/channels/production/generate/"
    assert api(personas["reviewer"]).post(url, {"prompt": "hi"}).status_code == 403
    assert client.post(url, {"prompt": ""}).json()["field"] == "prompt"
    assert client.post(url, {"prompt": [{"role": "x"}]}).json()["field"] == "prompt[0]"
    assert client.post(url, {"prompt": "hi", "max_new_tokens": 0}).json()["field"] == (
        "max_new_tokens"
    )
    answers = []
    for prompt in ("How long do claims take?", "Can I move my payment date?"):
        answer = client.post(url, {"prompt": prompt, "max_new_tokens": 5}, format="json")
        assert answer.status_code == 200, answer.json()
        answers.append(answer.json())
    body = answers[0]
    assert body["model_version"]["name"] == version.name and 0 <= body["confidence"] <= 1
    output = Output.objects.get(pk=body["output"]["id"])
    assert output.model_version == version.name and output.source == "channel:production"
    # Asked the way the version was trained: its examples' system message first.
    assert output.input == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "How long do claims take?"},
    ]
    assert output.output_text == (body["answer"] or "(empty answer)")
    assert output.metadata["model_version_id"] == str(version.pk)
    assert output.routing_reason and (output.queue_id or output.status == "auto_accepted")
    assert Output.objects.filter(source="channel:production").count() == 2
    health = call(model_server, "/health", None, timeout=REQUEST_SECONDS)
    assert health["loaded"] == [str(version.pk)] and health["loads"] == 1  # loaded once

    # Tampered after deployment: the server refuses to load it.
    second, _ = live_version(
        personas, make_dataset_version, tmp_path, tiny_model_dir, seed=1, channel=channel
    )
    (Path(second.artifact_dir) / "adapter_model.safetensors").write_bytes(b"not the adapter")
    refused = client.post(url, {"prompt": "hi"}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "artifact_tampered"


def test_the_model_server_answers_only_whoever_shows_the_web_process_secret(model_server):
    import urllib.error
    import urllib.request

    from serving.client import ServerRefused, call

    body = {"version_id": "00000000-0000-0000-0000-000000000000", "messages": []}
    bare = urllib.request.Request(
        model_server + "/generate", data=json.dumps(body).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bare, timeout=REQUEST_SECONDS)
    assert refused.value.code == 401
    with pytest.raises(ServerRefused) as wrong:
        call(model_server, "/generate", body, timeout=REQUEST_SECONDS, token="guessed")
    assert wrong.value.status == 401 and "web process only" in str(wrong.value)


@pytest.mark.django_db
def test_generate_is_503_when_the_model_server_is_not_running(
    api, personas, settings, tmp_path, make_dataset_version, tiny_base_model, training_dirs
):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.SIGNOFF_GOVERNANCE = {
        **settings.SIGNOFF_GOVERNANCE,
        "SERVING_URL": f"http://127.0.0.1:{port}",
    }
    client = api(personas["ml_engineer"])
    make_channel("production")
    nothing = client.post("/api/channels/production/generate/", {"prompt": "hi"})
    assert nothing.status_code == 409  # nothing live yet
    live_version(personas, make_dataset_version, tmp_path, None)
    answer = client.post("/api/channels/production/generate/", {"prompt": "hi"})
    assert answer.status_code == 503 and "serve_models" in answer.json()["detail"]


def test_the_web_process_never_imports_torch():
    code = (
        "import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings.test'\n"
        "import django; django.setup()\n"
        "from django.urls import get_resolver; get_resolver().url_patterns\n"
        "import config.wsgi, governance.api.views, governance.views\n"
        "import governance.compliance, serving.services.generate, core.api.audit_export\n"
        "print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
