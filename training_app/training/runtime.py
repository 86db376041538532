"""What training runs on: seeds, the device and dtype, out-of-memory diagnosis, the tokenizer
and base model (safetensors only, no remote code), the learning-rate schedule, and the
checkpoints found on disk."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from .arguments import TrainingFailed
from .base_model import check_folder
from .hyperparameters import CHOICES, cpu_world_size_cap


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def available_cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def resolve_device(name: str, *, processes: int = 1) -> tuple[str, Any]:
    """(device, dtype): bf16 on a GPU, fp32 on the CPU with the cores shared out among the
    `processes` training on this machine (torch's threads spin against each other otherwise)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return "cuda", torch.bfloat16
    torch.set_num_threads(max(1, available_cores() // max(1, processes)))
    return "cpu", torch.float32


def machine_world_size(device: str = "auto") -> int:
    """The most processes this machine trains with: one per CUDA device on a GPU machine,
    `hyperparameters.cpu_world_size_cap` on the CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return torch.cuda.device_count()
    return cpu_world_size_cap(available_cores())


def machine_limits(device: str = "auto") -> dict[str, Any]:
    """What `hyperparameters.validate(max_world_size=..., cuda=...)` needs to know about the
    machine that trains (a worker may record it; the web process never imports torch)."""
    import importlib.util

    import torch

    cuda = torch.cuda.is_available() and device != "cpu"
    return {
        "cuda": cuda,
        "cuda_devices": torch.cuda.device_count() if cuda else 0,
        "max_world_size": machine_world_size("cuda" if cuda else "cpu"),
        "bitsandbytes": importlib.util.find_spec("bitsandbytes") is not None,
    }


def check_machine(*, world_size: int, quantization: str, device: str) -> None:
    """Refuse, before any model loads, a run this machine cannot do."""
    import importlib.util

    if quantization not in CHOICES["quantization"]:
        raise TrainingFailed(
            f"quantization must be one of {', '.join(CHOICES['quantization'])}, "
            f"not {quantization!r}"
        )
    if quantization == "4bit":
        if not device.startswith("cuda"):
            raise TrainingFailed(
                f"quantization 4bit (QLoRA) needs a CUDA GPU; this run is on {device}: "
                "set quantization to none"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TrainingFailed(
                "quantization 4bit (QLoRA) needs bitsandbytes, which is not installed "
                "(pip install bitsandbytes), or set quantization to none"
            )
    available = machine_world_size(device)
    if world_size < 1 or world_size > available:
        where = f"{available} CUDA device(s)" if device.startswith("cuda") else "CPU cores"
        raise TrainingFailed(
            f"world_size {world_size} does not fit this machine: at most {available} "
            f"processes ({where})"
        )


def precision_name(dtype: Any, quantization: str) -> str:
    name = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(
        str(dtype).removeprefix("torch."), str(dtype)
    )
    return f"nf4 base, {name} compute and adapter" if quantization == "4bit" else name


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(path: str, *, device: str, dtype: Any, quantization: str = "none"):
    from transformers import AutoModelForCausalLM

    check_folder(Path(path))  # refuses pickled weights and remote code before anything loads
    options: dict[str, Any] = {
        "dtype": dtype,
        "use_safetensors": True,
        "local_files_only": True,
        "trust_remote_code": False,
    }
    if quantization == "4bit":
        # QLoRA: the frozen base in NF4 (double-quantised), computing in the run's dtype.
        # bitsandbytes places the weights itself; a quantised model refuses `.to()`.
        import torch
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        options["device_map"] = {"": torch.cuda.current_device()}
        return AutoModelForCausalLM.from_pretrained(path, **options)
    model = AutoModelForCausalLM.from_pretrained(path, **options)
    return model.to(device)


def _lr_lambda(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - (step - warmup_steps) / remaining)

    return factor


def _checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and (p / "trainer_state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[-1]))


def last_checkpoint(output_dir: str | Path) -> Path | None:
    found = _checkpoints(Path(output_dir) / "checkpoints")
    return found[-1] if found else None
