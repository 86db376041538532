"""The datasets API: who may build and read (tested from the refused side too), bad input,
exports that `datasets` and TRL read, diffs."""

import json
import os
from pathlib import Path

import pytest

from datasets_app.models import DatasetVersion

pytestmark = pytest.mark.django_db

BUILDERS = ["ml_engineer", "admin"]
NOT_BUILDERS = ["reviewer", "reviewer2", "lead", "approver", "deployer", "auditor", "outsider"]
READERS = ["ml_engineer", "admin", "auditor", "approver"]
NOT_READERS = ["reviewer", "reviewer2", "lead", "deployer", "outsider"]


@pytest.fixture
def data(resolved):
    for n in range(8):
        resolved(f"How do I file claim number {n} for water damage in the kitchen", f"Like {n}.")
    resolved(
        "Is my bike covered away from home?",
        "No.",
        resolution="corrected",
        correction="Yes, up to 1,000 pounds.",
        by="consensus",
    )
    resolved("Call me on +44 20 7946 0958", "We will call +44 20 7946 0958.")


@pytest.fixture
def built(data, api, personas):
    response = api(personas["ml_engineer"]).post(
        "/api/datasets/", {"name": "support", "seed": 1, "eval_fraction": 0.3}, format="json"
    )
    assert response.status_code == 201, response.json()
    return DatasetVersion.objects.get(pk=response.json()["id"])


@pytest.mark.parametrize("role", BUILDERS)
def test_builders_build_inline(data, api, personas, role):
    response = api(personas[role]).post(
        "/api/datasets/", {"name": "support", "queues": ["support"], "seed": 2}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "ready" and body["created_by"] == role
    assert body["counts"]["train"] + body["counts"]["eval"] == 10
    assert body["settings"]["queues"] == ["support"]


@pytest.mark.parametrize("role", NOT_BUILDERS)
def test_everyone_else_is_refused_building(data, api, personas, role):
    response = api(personas[role]).post("/api/datasets/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert not DatasetVersion.objects.exists()


def test_anonymous_is_refused(built, api):
    assert api().post("/api/datasets/", {"name": "x"}, format="json").status_code == 401
    assert api().get(f"/api/datasets/{built.pk}/").status_code == 401


@pytest.mark.parametrize("role", READERS)
def test_readers_read(built, api, personas, role):
    client = api(personas[role])
    assert client.get("/api/datasets/").json()["results"][0]["id"] == built.pk
    body = client.get(f"/api/datasets/{built.pk}/").json()
    assert body["manifest_hash"] == built.manifest_hash
    assert client.get(f"/api/datasets/{built.pk}/export/?format=chat").status_code == 200


@pytest.mark.parametrize("role", NOT_READERS)
def test_reviewers_and_others_cannot_read(built, api, personas, role):
    client = api(personas[role])
    assert client.get("/api/datasets/").status_code == 403
    assert client.get(f"/api/datasets/{built.pk}/").status_code == 403
    assert client.get(f"/api/datasets/{built.pk}/export/?format=chat").status_code == 403
    assert client.get(f"/api/datasets/{built.pk}/diff/{built.pk}/").status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "x", "eval_fraction": "lots"}, "eval_fraction"),
        ({"name": "x", "caps": {"label": {"approved": -1}}}, "caps.label.approved"),
        ({"name": "x", "caps": {"colour": {"red": 3}}}, "caps"),
        ({"name": "x", "pii_patterns": {"ID": "[unclosed"}}, "pii_patterns"),
        ({"name": "x", "tokenizer_path": "/etc/passwd"}, "tokenizer_path"),
        ({"name": "x", "resolved_to": "not a date"}, "resolved_to"),
        ({"name": "x", "stratify": "weather"}, "stratify"),
        ({"name": "x", "surprise": True}, "surprise"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(data, api, personas, body, field):
    response = api(personas["ml_engineer"]).post("/api/datasets/", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["field"] == field
    assert not DatasetVersion.objects.exists()


def test_missing_versions_are_404(api, personas):
    client = api(personas["auditor"])
    assert client.get("/api/datasets/12345/").status_code == 404
    assert client.get("/api/datasets/12345/export/?format=chat").status_code == 404


def test_bad_export_format_or_split_is_a_400(built, api, personas):
    client = api(personas["auditor"])
    response = client.get(f"/api/datasets/{built.pk}/export/?format=csv")
    assert response.status_code == 400 and response.json()["field"] == "format"
    response = client.get(f"/api/datasets/{built.pk}/export/?format=chat&split=test")
    assert response.status_code == 400 and response.json()["field"] == "split"


def _download(client, url):
    response = client.get(url)
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


def test_exports_load_unchanged_with_datasets_load_dataset(built, api, personas, tmp_path):
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path / "cache")
    from datasets import load_dataset

    client = api(personas["auditor"])
    files = {}
    for fmt in ("chat", "prompt_completion", "dpo"):
        for split in ("train", "eval"):
            path = tmp_path / f"{fmt}-{split}.jsonl"
            path.write_text(
                _download(client, f"/api/datasets/{built.pk}/export/?format={fmt}&split={split}")
            )
            files[fmt, split] = str(path)
    chat = load_dataset(
        "json",
        data_files={"train": files["chat", "train"], "eval": files["chat", "eval"]},
        cache_dir=str(tmp_path / "cache"),
    )
    assert chat["train"].num_rows == built.counts["train"]
    assert chat["eval"].num_rows == built.counts["eval"]
    row = chat["train"][0]
    assert row["messages"][-1]["role"] == "assistant" and row["messages"][0]["role"] == "user"
    pc = load_dataset("json", data_files=files["prompt_completion", "train"], split="train",
                      cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert set(pc.column_names) >= {"prompt", "completion"}
    assert pc[0]["completion"][0]["role"] == "assistant"
    # The corrected example becomes one preference pair, wherever the split put it.
    dpo_lines = [
        json.loads(line)
        for split in ("train", "eval")
        for line in Path(files["dpo", split]).read_text().splitlines()
    ]
    assert len(dpo_lines) == 1
    pair = dpo_lines[0]
    assert pair["prompt"] == [{"role": "user", "content": "Is my bike covered away from home?"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "Yes, up to 1,000 pounds."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "No."}]
    nonempty = next(files["dpo", s] for s in ("train", "eval") if Path(files["dpo", s]).read_text())
    dpo = load_dataset("json", data_files=nonempty, split="train", cache_dir=str(tmp_path / "c2"))
    assert set(dpo.column_names) >= {"prompt", "chosen", "rejected"}


def test_the_data_card_has_counts_settings_pii_and_hash(built, api, personas):
    response = api(personas["auditor"]).get(f"/api/datasets/{built.pk}/export/?format=card")
    card = response.content.decode()
    assert response["Content-Type"].startswith("text/markdown")
    assert built.manifest_hash in card
    assert f"{built.counts['train']} train, {built.counts['eval']} eval" in card
    assert "| PHONE | 2 |" in card
    assert '"seed": 1' in card
    assert "| support |" in card  # the queue the examples came from


def test_diff_between_two_versions(built, api, personas, resolved):
    resolved("Totally new question about travel insurance abroad", "Yes.")
    client = api(personas["ml_engineer"])
    newer = client.post("/api/datasets/", {"name": "support", "seed": 1, "eval_fraction": 0.3},
                        format="json").json()  # fmt: skip
    assert newer["parent"] == built.pk
    body = client.get(f"/api/datasets/{newer['id']}/diff/{built.pk}/").json()
    assert (body["added"], body["removed"], body["changed"]) == (1, 0, 0)
    assert body["unchanged"] == built.counts["total"]
    back = client.get(f"/api/datasets/{built.pk}/diff/{newer['id']}/").json()
    assert (back["added"], back["removed"]) == (0, 1)


def test_large_builds_go_to_the_background_queue(
    data, api, personas, monkeypatch, django_capture_on_commit_callbacks
):
    import dramatiq

    from datasets_app.services import builds
    from datasets_app.tasks import build_dataset_version

    monkeypatch.setattr(builds, "INLINE_LIMIT", 3)
    broker = dramatiq.get_broker()
    broker.flush_all()
    with django_capture_on_commit_callbacks(execute=True):
        response = api(personas["admin"]).post("/api/datasets/", {"name": "big"}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "building"
    queued = broker.queues["datasets"]
    assert queued.qsize() == 1
    message = dramatiq.Message.decode(queued.get())
    assert message.actor_name == "build_dataset_version"
    assert message.args == (response.json()["id"],)
    # Run the actor the way a worker would (the worker's own thread could not see this test's
    # uncommitted rows); a second delivery of the same message does nothing.
    build_dataset_version.fn(*message.args)
    build_dataset_version.fn(*message.args)
    version = DatasetVersion.objects.get(pk=response.json()["id"])
    assert version.status == "ready" and version.progress["step"] == "done"
