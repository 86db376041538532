"""The openai serving backend against engine doubles (engine_double.py: a real HTTP server that
speaks the engine's wire protocol, not vLLM or llama.cpp themselves): what Signoff sends on
deploy, rollback, retire and generate, and what it does when an engine is down or refuses."""

import pytest

from core.audit import audit_verify
from core.models import AuditEvent
from governance.models import Channel, Deployment
from governance.services import channel_deploy, channel_rollback, model_version_retire
from reviews.models import Output
from serving.backends import adapter_name
from serving.services.engines import engine_adapters_sync
from training_app.services.versions import adapter_manifest

from .engine_double import BASE, EngineDouble, closed_port_url

KEY = "engine-key"


def deploy(personas, channel, version, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return channel_deploy(user=personas["deployer"], channel=channel, version=version)


def generate(api, personas, prompt="How far do you tow?"):
    return api(personas["ml_engineer"]).post(
        "/api/channels/production/generate/",
        {"prompt": prompt, "max_new_tokens": 16},
        format="json",
    )


def test_it_loads_the_adapter_on_every_engine_before_going_live(
    personas, channel, approved_version, engines, use_engines, django_capture_on_commit_callbacks
):
    one, two = engines(2)
    adapters = use_engines([one.url, two.url])
    version = approved_version()
    name = adapter_name(version)
    deploy(personas, channel, version, django_capture_on_commit_callbacks)

    for engine in (one, two):
        assert engine.admin_calls() == [
            ("/v1/load_lora_adapter", {"lora_name": name, "lora_path": f"/shared/adapters/{name}"})
        ]
        assert {r["authorization"] for r in engine.requests} == {f"Bearer {KEY}"}
    # What the engines read is what was signed off.
    assert adapter_manifest(adapters / name) == version.manifest
    event = AuditEvent.objects.get(action="channel.deploy")
    assert event.payload["serving"]["serving"]["engines"] == {
        one.url: "loaded",
        two.url: "loaded",
    }
    channel.refresh_from_db()
    assert channel.live_version == version


def test_generate_asks_the_live_adapter_and_records_the_answer_for_review(
    api,
    personas,
    channel,
    approved_version,
    engines,
    use_engines,
    django_capture_on_commit_callbacks,
):
    (engine,) = engines(1)
    use_engines([engine.url])
    version = approved_version()
    deploy(personas, channel, version, django_capture_on_commit_callbacks)

    answer = generate(api, personas)
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["answer"] == f"answer from {adapter_name(version)}"
    assert body["model_version"] == {"id": str(version.pk), "name": version.name}
    (chat,) = engine.chats()
    assert chat["model"] == adapter_name(version)
    assert chat["max_tokens"] == 16 and chat["temperature"] == 0
    # The same conversation the version was trained on: the dataset's system prompt (if any)
    # in front of the question.
    assert chat["messages"][-1] == {"role": "user", "content": "How far do you tow?"}
    output = Output.objects.get(pk=body["output"]["id"])
    assert output.model_version == version.name and output.source == "channel:production"
    assert output.input == chat["messages"]
    assert output.metadata["engine"] == engine.url
    assert output.confidence == pytest.approx(0.9048, abs=1e-3)  # exp(-0.1)
    assert body["output"]["queue"] is not None  # routed into review like any traffic
    assert engine.requests[-1]["authorization"] == f"Bearer {KEY}"


def test_rollback_loads_the_earlier_version_before_unloading_the_later(
    api,
    personas,
    channel,
    approved_version,
    engines,
    use_engines,
    django_capture_on_commit_callbacks,
):
    (engine,) = engines(1)
    use_engines([engine.url])
    first, second = approved_version(1), approved_version(2)
    deploy(personas, channel, first, django_capture_on_commit_callbacks)
    deploy(personas, channel, second, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        channel_rollback(user=personas["deployer"], channel=channel, comment="bad answers")

    a, b = adapter_name(first), adapter_name(second)
    assert engine.admin_calls() == [
        ("/v1/load_lora_adapter", {"lora_name": a, "lora_path": f"/shared/adapters/{a}"}),
        ("/v1/load_lora_adapter", {"lora_name": b, "lora_path": f"/shared/adapters/{b}"}),
        ("/v1/unload_lora_adapter", {"lora_name": a}),  # first replaced by second
        ("/v1/load_lora_adapter", {"lora_name": a, "lora_path": f"/shared/adapters/{a}"}),
        ("/v1/unload_lora_adapter", {"lora_name": b}),  # second rolled back
    ]
    assert set(engine.adapters) == {a}
    answer = generate(api, personas)
    assert answer.json()["model_version"]["name"] == first.name
    assert engine.chats()[-1]["model"] == a

    # Withdrawing the only release, then retiring: nothing of it stays on the engine.
    with django_capture_on_commit_callbacks(execute=True):
        channel_rollback(user=personas["deployer"], channel=channel, comment="stop")
    assert engine.adapters == {}
    assert generate(api, personas).status_code == 409  # nothing live: nothing is asked
    with django_capture_on_commit_callbacks(execute=True):
        model_version_retire(user=personas["deployer"], version=first, comment="superseded")
    assert len(engine.chats()) == 1


@pytest.mark.parametrize("how", ["down", "refuses"])
def test_an_engine_that_is_down_or_refuses_leaves_the_channel_as_it_was(
    api,
    personas,
    channel,
    approved_version,
    engines,
    use_engines,
    django_capture_on_commit_callbacks,
    how,
):
    (engine,) = engines(1)
    use_engines([engine.url])
    first = approved_version(1)
    deploy(personas, channel, first, django_capture_on_commit_callbacks)
    second = approved_version(2)
    if how == "down":
        engine.stop()
        use_engines([engine.url])
    else:
        engine.refuse_loads = "LoRA rank 64 is greater than max_lora_rank 16."

    answer = api(personas["deployer"]).post(
        "/api/channels/production/deploy/", {"version": str(second.pk)}, format="json"
    )
    expected = (503, "serving_unavailable") if how == "down" else (502, "engine_refused")
    assert (answer.status_code, answer.json()["code"]) == expected
    if how == "refuses":
        assert "max_lora_rank 16" in answer.json()["detail"]
    assert "Nothing was deployed" in answer.json()["detail"]
    channel.refresh_from_db()
    second.refresh_from_db()
    assert channel.live_version == first and second.status == "approved"
    assert Deployment.objects.filter(version=second).count() == 0
    refusal = AuditEvent.objects.get(action="channel.deploy_refused")
    assert refusal.payload["version"] == str(second.pk)
    assert refusal.payload["engines"][engine.url].startswith(
        "not answering" if how == "down" else "refused (400)"
    )
    assert audit_verify() > 0
    if how == "refuses":  # the live version still answers
        assert generate(api, personas).json()["model_version"]["name"] == first.name


def test_a_deploy_that_reaches_some_engines_is_reported_and_retried(
    api,
    personas,
    channel,
    approved_version,
    engines,
    use_engines,
    django_capture_on_commit_callbacks,
):
    up, later = engines(2)
    port = int(later.url.rsplit(":", 1)[1])
    later.stop()
    use_engines([up.url, later.url])
    version = approved_version()
    deploy(personas, channel, version, django_capture_on_commit_callbacks)

    serving = AuditEvent.objects.get(action="channel.deploy").payload["serving"]["serving"]
    assert serving["engines"] == {up.url: "loaded"}
    assert serving["failed"][later.url].startswith("not answering")
    # Requests go to the engine that has it; the one that is down is skipped.
    for _ in range(3):
        assert generate(api, personas).status_code == 200
    assert len(up.chats()) == 3

    back = EngineDouble(port=port)  # the engine comes back, without the adapter
    try:
        swept = engine_adapters_sync()
        assert swept["loaded"] == [f"{version.name} on {back.url}"] and not swept["failed"]
        assert set(back.adapters) == {adapter_name(version)}
        assert engine_adapters_sync() == {"loaded": [], "unloaded": [], "failed": []}
    finally:
        back.stop()


def test_an_engine_that_lost_its_adapters_loads_the_live_one_again(
    api,
    personas,
    channel,
    approved_version,
    engines,
    use_engines,
    django_capture_on_commit_callbacks,
):
    (engine,) = engines(1)
    use_engines([engine.url])
    version = approved_version()
    deploy(personas, channel, version, django_capture_on_commit_callbacks)
    engine.adapters.clear()  # restarted: vLLM forgets runtime-loaded adapters
    answer = generate(api, personas)
    assert answer.status_code == 200 and set(engine.adapters) == {adapter_name(version)}


def test_the_sweep_takes_out_adapters_of_versions_live_nowhere(
    personas, channel, approved_version, engines, use_engines, django_capture_on_commit_callbacks
):
    (engine,) = engines(1)
    use_engines([engine.url])
    version = approved_version()
    deploy(personas, channel, version, django_capture_on_commit_callbacks)
    engine.adapters["signoff-00000000-0000-0000-0000-000000000000"] = "/shared/adapters/old"
    swept = engine_adapters_sync()
    assert swept["unloaded"] == [f"signoff-00000000-0000-0000-0000-000000000000 on {engine.url}"]
    assert set(engine.adapters) == {adapter_name(version)}


def test_only_the_live_version_can_be_asked(
    api,
    personas,
    channel,
    approved_version,
    engines,
    use_engines,
    django_capture_on_commit_callbacks,
):
    (engine,) = engines(1)
    use_engines([engine.url])
    assert generate(api, personas).status_code == 409  # nothing live yet
    first, second = approved_version(1), approved_version(2)
    deploy(personas, channel, first, django_capture_on_commit_callbacks)
    deploy(personas, channel, second, django_capture_on_commit_callbacks)
    for role in ("reviewer", "approver", "auditor", "outsider"):
        refused = api(personas[role]).post(
            "/api/channels/production/generate/", {"prompt": "hi"}, format="json"
        )
        assert refused.status_code == 403
    assert generate(api, personas).json()["model_version"]["name"] == second.name
    # The replaced version is no longer on the engine: even with the key it is not answered.
    from serving.backends.openai import engine_request
    from serving.client import ServerRefused

    with pytest.raises(ServerRefused) as refused:
        engine_request(
            "POST",
            engine.url,
            "/v1/chat/completions",
            {"model": adapter_name(first), "messages": [{"role": "user", "content": "hi"}]},
            api_key=KEY,
            timeout=5,
        )
    assert refused.value.status == 404
    # And without Signoff's key the engine answers nobody.
    with pytest.raises(ServerRefused) as unauthorised:
        engine_request(
            "POST",
            engine.url,
            "/v1/chat/completions",
            {"model": BASE, "messages": [{"role": "user", "content": "hi"}]},
            api_key="guess",
            timeout=5,
        )
    assert unauthorised.value.status == 401
    assert engine.chats()[0]["model"] == adapter_name(second)  # what Signoff asked


def test_all_engines_down_at_generate_is_a_clear_503(
    api,
    personas,
    channel,
    approved_version,
    engines,
    use_engines,
    django_capture_on_commit_callbacks,
):
    (engine,) = engines(1)
    use_engines([engine.url])
    deploy(personas, channel, approved_version(), django_capture_on_commit_callbacks)
    down = closed_port_url()
    use_engines([down])
    answer = generate(api, personas)
    assert answer.status_code == 503 and down in answer.json()["detail"]
    assert not Output.objects.filter(source="channel:production").exists()
    assert Channel.objects.get(pk=channel.pk).live_version is not None
