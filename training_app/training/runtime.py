"""What training runs on: seeds, the device and dtype, out-of-memory diagnosis, the tokenizer
and base model (safetensors only, no remote code), the learning-rate schedule, and the
checkpoints found on disk."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from .base_model import check_folder


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(name: str) -> tuple[str, Any]:
    """(device, dtype): bf16 on a GPU, fp32 with every core on the CPU."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return "cuda", torch.bfloat16
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cores or 1))
    return "cpu", torch.float32


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


def load_base_model(path: str, *, device: str, dtype: Any):
    from transformers import AutoModelForCausalLM

    check_folder(Path(path))  # refuses pickled weights and remote code before anything loads
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, use_safetensors=True, local_files_only=True, trust_remote_code=False
    )
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
