"""The model server with adapters merged into the base weights answers as the unmerged one."""

import threading

import pytest

from serving.client import call
from serving.server import ModelCache, make_server

from ..waiting import REQUEST_SECONDS
from .governance_helpers import make_version

PROMPTS = [
    [{"role": "user", "content": "How long do claims take?"}],
    [{"role": "user", "content": "Can I move my payment date?"}],
    [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "How far do you tow?"},
    ],
]


@pytest.fixture
def servers():
    running = []

    def start(*, merge_adapters: bool) -> str:
        server = make_server("127.0.0.1", 0, merge_adapters=merge_adapters)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in running:
        server.shutdown()
        server.server_close()


def approved_version(personas, make_dataset_version, tmp_path, base_dir, seed=0):
    return make_version(
        launcher=personas["ml_engineer"],
        dataset=make_dataset_version(2, 1, name=f"merged{seed}"),
        tmp_path=tmp_path,
        status="approved",
        base_dir=base_dir,
        seed=seed,
    )


@pytest.mark.django_db(transaction=True)
def test_merged_answers_equal_the_unmerged_greedy_answers(
    personas, make_dataset_version, tiny_base_model, tiny_model_dir, training_dirs, tmp_path,
    servers,
):  # fmt: skip
    version = approved_version(personas, make_dataset_version, tmp_path, tiny_model_dir)
    unmerged, merged = servers(merge_adapters=False), servers(merge_adapters=True)
    for prompt in PROMPTS:
        body = {"version_id": str(version.pk), "messages": prompt, "max_new_tokens": 12}
        plain = call(unmerged, "/generate", body, timeout=REQUEST_SECONDS)
        folded = call(merged, "/generate", body, timeout=REQUEST_SECONDS)
        assert plain["tokens"] == folded["tokens"] > 0
        assert folded["text"] == plain["text"]
        assert folded["confidence"] == pytest.approx(plain["confidence"], abs=1e-3)
        assert folded["manifest_digest"] == plain["manifest_digest"]
    health = call(merged, "/health", None, timeout=REQUEST_SECONDS)
    assert health["merged"] is True and health["loaded"] == [str(version.pk)]
    assert health["loads"] == 1  # loaded once, then reused
    assert call(unmerged, "/health", None, timeout=REQUEST_SECONDS)["merged"] is False


@pytest.mark.django_db
def test_the_merged_model_has_no_adapter_layers_and_keeps_the_recent_versions(
    personas, make_dataset_version, tiny_base_model, tiny_model_dir, training_dirs, tmp_path
):
    first = approved_version(personas, make_dataset_version, tmp_path, tiny_model_dir, seed=1)
    second = approved_version(personas, make_dataset_version, tmp_path, tiny_model_dir, seed=2)
    cache = ModelCache(merge_adapters=True, merged_limit=1)
    answers = {}
    for version in (first, second, first):
        answers.setdefault(version.pk, []).append(
            cache.generate(version=version, messages=PROMPTS[0], max_new_tokens=6)["text"]
        )
        assert cache.loaded() == [str(version.pk)]  # the other one was let go
    assert cache.loads == 3
    assert answers[first.pk][0] == answers[first.pk][1]
    model = cache.merged[str(first.pk)]["model"]
    assert not any("lora" in name for name, _ in model.named_modules())
