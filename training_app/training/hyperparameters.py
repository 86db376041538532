"""The hyperparameters a run accepts, their defaults and limits, checked before anything queues.

Plain Python (no torch, no Django): the web process validates with it, the trainer takes the
result as keyword arguments of `TrainingArguments`.
"""

from __future__ import annotations

import re
from typing import Any

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Architectures whose linear layers carry exactly these names.
LLAMA_LIKE = {
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
}

# The default recipe, measured on the demo data (docs/training.md): r=16 on every linear layer
# at lr 1e-3 learns the content of short answers: on the demo data two epochs take the eval
# loss from 3.48 (base) to 0.011 in under 6 minutes on an idle 2-core CPU, where one epoch on
# its own schedule stops at 0.27 (docs/benchmarks.md).
DEFAULTS: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": list(ALL_LINEAR),
    "learning_rate": 1e-3,
    "num_epochs": 2,
    "batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_length": 256,
    "packing": "shared_prefix",
    "seed": 42,
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "checkpoint_every_steps": 50,
    "max_steps": None,
    # Evaluate (and keep the best adapter) every N optimizer steps as well as at every epoch
    # end; None: epoch ends only. A run of few epochs gets it from the recipe (recipe.py), so
    # the best adapter is picked from more than one or two evaluations.
    "eval_every_steps": None,
    # Processes training together (one per GPU, or CPU processes). The other numbers keep their
    # meaning for any world size: `batch_size * gradient_accumulation_steps` examples make one
    # optimizer step, split across the processes (docs/training.md, "More than one device").
    "world_size": 1,
    # none: the base model in bf16 (GPU) or fp32 (CPU); 4bit: QLoRA, the frozen base in NF4
    # (needs a CUDA GPU and bitsandbytes).
    "quantization": "none",
}

# field: (type, minimum, maximum)
LIMITS: dict[str, tuple[type, float, float]] = {
    "lora_r": (int, 1, 256),
    "lora_alpha": (int, 1, 4096),
    "lora_dropout": (float, 0.0, 0.9),
    "learning_rate": (float, 1e-7, 1.0),
    "num_epochs": (int, 1, 100),
    "batch_size": (int, 1, 512),
    "gradient_accumulation_steps": (int, 1, 512),
    "max_length": (int, 16, 32768),
    "seed": (int, 0, 2**31 - 1),
    "warmup_ratio": (float, 0.0, 0.5),
    "weight_decay": (float, 0.0, 1.0),
    "checkpoint_every_steps": (int, 1, 1_000_000),
    "max_steps": (int, 1, 10_000_000),
    "eval_every_steps": (int, 1, 10_000_000),
    # The hard cap; `validate(max_world_size=...)` narrows it to what the worker's machine has.
    "world_size": (int, 1, 64),
}
# Fields that may also be None (no limit, no extra evaluations).
NULLABLE = frozenset({"max_steps", "eval_every_steps"})
# field: allowed values (see TrainingArguments for what each means)
CHOICES: dict[str, tuple[str, ...]] = {
    "packing": ("shared_prefix", "flatten", "none"),
    "quantization": ("none", "4bit"),
}
# CPU processes beyond this stop paying: each needs its own copy of the model and its own cores.
CPU_MAX_WORLD_SIZE = 8
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")


class HyperparameterError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def cpu_world_size_cap(cores: int | None) -> int:
    """How many CPU processes a machine with `cores` cores may train with (one core each at
    least, and no more than CPU_MAX_WORLD_SIZE)."""
    return max(1, min(CPU_MAX_WORLD_SIZE, cores or 1))


def validate(
    values: dict[str, Any] | None,
    *,
    architecture: str = "",
    max_world_size: int | None = None,
    cuda: bool | None = None,
) -> dict[str, Any]:
    """The complete, checked set of hyperparameters (defaults filled in).

    `max_world_size` and `cuda` describe the machine that will train, where the caller knows it
    (`runtime.machine_limits()` measures them; the web process, which never imports torch, may
    leave them out and the trainer checks again before it starts).
    Raises HyperparameterError naming the first field that is unknown or out of range."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise HyperparameterError("hyperparameters", "must be an object")
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise HyperparameterError(unknown[0], "unknown hyperparameter")
    clean = {**DEFAULTS, **{k: v for k, v in values.items()}}
    for name, (kind, low, high) in LIMITS.items():
        value = clean[name]
        if value is None and name in NULLABLE:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise HyperparameterError(name, f"must be a number, got {value!r}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise HyperparameterError(name, "must be a whole number")
            value = int(value)
        else:
            value = float(value)
        if not (low <= value <= high):
            raise HyperparameterError(name, f"must be between {low:g} and {high:g}")
        clean[name] = value
    for name, allowed in CHOICES.items():
        if clean[name] not in allowed:
            raise HyperparameterError(name, f"must be one of {', '.join(allowed)}")
    modules = clean["target_modules"]
    if isinstance(modules, str):
        modules = [m.strip() for m in modules.split(",") if m.strip()]
    if not isinstance(modules, list) or not modules or len(modules) > 32:
        raise HyperparameterError("target_modules", "must be a list of 1 to 32 module names")
    for module in modules:
        if not isinstance(module, str) or not MODULE_NAME.match(module):
            raise HyperparameterError("target_modules", f"{module!r} is not a module name")
        if architecture in LLAMA_LIKE and module not in ALL_LINEAR:
            raise HyperparameterError(
                "target_modules",
                f"{module!r} is not a linear layer of {architecture} "
                f"(choose from {', '.join(ALL_LINEAR)})",
            )
    clean["target_modules"] = list(dict.fromkeys(modules))
    if max_world_size is not None and clean["world_size"] > max_world_size:
        raise HyperparameterError(
            "world_size", f"this machine trains with at most {max_world_size} processes"
        )
    if cuda is False and clean["quantization"] == "4bit":
        raise HyperparameterError(
            "quantization",
            "4bit (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no GPU",
        )
    return clean
