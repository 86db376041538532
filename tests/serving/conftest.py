"""Versions with real (numpy-written) LoRA adapters on a registered base folder, channels, and
engine doubles; no torch is loaded."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from governance.services import signoff_decide, signoff_request_create
from tests.training_app.conftest import make_dataset_version, training_dirs  # noqa: F401
from tests.training_app.governance_helpers import finish_evaluations, make_channel
from training_app.models import ModelVersion
from training_app.services import training_run_create
from training_app.services.versions import model_version_store_adapter

from .engine_double import EngineDouble

# SmolLM2-135M's shape, scaled down: 4 heads, 2 key/value heads, 2 layers.
BASE_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "model_type": "llama",
}


def write_lora(folder: Path, seed: int = 0, rank: int = 4) -> Path:
    """A PEFT-shaped LoRA adapter (q/k/v projections) written with numpy."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(BASE_CONFIG["num_hidden_layers"]):
        for module, out in (("q_proj", 32), ("k_proj", 16), ("v_proj", 16)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, 32), np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((out, rank), np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "seed": seed}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def base_folder(tmp_path) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BASE_CONFIG))
    save_file({"w": np.zeros((2, 2), np.float32)}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture
def base_model(db, base_folder, settings, training_dirs):  # noqa: F811
    from training_app.services import base_model_register

    return base_model_register(
        user=None, name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"], folder=base_folder
    )


@pytest.fixture
def dataset(make_dataset_version, base_model):  # noqa: F811
    return make_dataset_version(2, 1)


@pytest.fixture
def channel(db):
    return make_channel("production")


@pytest.fixture
def approved_version(personas, dataset, channel, tmp_path):
    """`approved_version(seed)`: a version with its own adapter, signed off for production."""

    def make(seed: int = 0) -> ModelVersion:
        run = training_run_create(
            user=personas["ml_engineer"],
            dataset_version=dataset,
            enqueue=False,
            hyperparameters={"num_epochs": 1},
        )
        version = ModelVersion.objects.select_related("base_model").get(run=run)
        adapter = write_lora(tmp_path / f"adapter-{seed}", seed=seed)
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


@pytest.fixture
def engines():
    """`engines(n, flavour=...)`: started engine doubles, stopped after the test."""
    started: list[EngineDouble] = []

    def start(count: int = 1, **kwargs) -> list[EngineDouble]:
        new = [EngineDouble(**kwargs) for _ in range(count)]
        started.extend(new)
        return new

    yield start
    for engine in started:
        engine.stop()


@pytest.fixture
def use_engines(settings, tmp_path):
    """Point Signoff at these engine URLs (the openai backend)."""

    def use(urls: list[str], *, flavour: str = "vllm", api_key: str = "engine-key") -> Path:
        adapters = tmp_path / "engine-adapters"
        settings.SIGNOFF_SERVING = {
            **settings.SIGNOFF_SERVING,
            "BACKEND": "openai",
            "ENGINE_URLS": urls,
            "ENGINE_API_KEY": api_key,
            "ENGINE_FLAVOUR": flavour,
            "ENGINE_ADAPTERS_DIR": adapters,
            "ENGINE_ADAPTERS_PATH": "/shared/adapters",
            "ENGINE_ADMIN_TIMEOUT_SECONDS": 5.0,
        }
        return adapters

    return use
