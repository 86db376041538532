"""A PEFT LoRA adapter (safetensors) as a GGUF LoRA for llama.cpp, without torch: the part of
llama.cpp's `convert_lora_to_gguf.py` that Signoff's adapters need (Llama-architecture bases
such as SmolLM2; plain LoRA on the attention and MLP projections).

Like the upstream converter it names each pair `<gguf tensor>.weight.lora_a` / `.lora_b`
(gguf's TensorNameMap), records `adapter.lora.alpha`, and permutes the rows of q_proj's and
k_proj's B matrix the way convert_hf_to_gguf permutes those base weights for llama.cpp's rotary
layout (A is untouched: the permutation acts on output rows only). Anything else (DoRA, rsLoRA,
per-module ranks, extra saved modules, other architectures) is refused rather than guessed."""

import json
import re
from pathlib import Path

ARCHITECTURES = {"LlamaForCausalLM": "LLAMA"}
TENSOR = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight")


class UnsupportedAdapter(ValueError):
    pass


def _permute(weights, n_head: int, n_head_kv: int):  # type: ignore[no-untyped-def]
    """convert_hf_to_gguf's LlamaModel.permute, on the B matrix (out_features x r)."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def lora_to_gguf(adapter_dir: Path, out: Path, *, base_config: Path) -> Path:
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = json.loads(base_config.read_text())
    architecture = (base.get("architectures") or [""])[0]
    if architecture not in ARCHITECTURES:
        raise UnsupportedAdapter(f"base architecture {architecture or '?'} is not supported")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise UnsupportedAdapter(f"peft_type {config.get('peft_type')} is not LoRA")
    for key in ("use_dora", "use_rslora", "modules_to_save", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise UnsupportedAdapter(f"{key} is not supported")
    n_head = int(base["num_attention_heads"])
    n_head_kv = int(base.get("num_key_value_heads") or n_head)
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[architecture])
    names = gguf.TensorNameMap(arch, int(base["num_hidden_layers"]))

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        match = TENSOR.fullmatch(key)
        if match is None:
            raise UnsupportedAdapter(f"unexpected tensor {key}")
        pairs.setdefault(match["module"], {})[match["ab"]] = value
    if not pairs:
        raise UnsupportedAdapter("the adapter holds no LoRA tensors")

    writer = gguf.GGUFWriter(str(out), arch=gguf.MODEL_ARCH_NAMES[arch])
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise UnsupportedAdapter(f"{module} lacks lora_A or lora_B")
        mapped = names.get_name(module)
        if mapped is None:
            raise UnsupportedAdapter(f"llama.cpp has no tensor for {module}")
        lora_a = pair["A"].astype(np.float32)
        lora_b = pair["B"].astype(np.float32)
        if module.endswith("self_attn.q_proj"):
            lora_b = _permute(lora_b, n_head, n_head)
        elif module.endswith("self_attn.k_proj"):
            lora_b = _permute(lora_b, n_head, n_head_kv)
        writer.add_tensor(f"{mapped}.weight.lora_a", np.ascontiguousarray(lora_a))
        writer.add_tensor(f"{mapped}.weight.lora_b", np.ascontiguousarray(lora_b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
