"""What a training run takes and gives back, and how its caller follows and stops it: the
arguments, progress reports, the result, the hooks, and the two ways a run ends early."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .hyperparameters import ALL_LINEAR


@dataclass
class TrainingArguments:
    base_model_path: str = field(metadata={"help": "Local folder of the base model (safetensors)."})
    train_file: str = field(metadata={"help": "JSONL of {example_id, messages, weight}."})
    output_dir: str = field(metadata={"help": "Checkpoints and the final adapter go here."})
    eval_file: str | None = field(default=None, metadata={"help": "JSONL of the eval split."})
    parent_adapter_path: str | None = field(
        default=None, metadata={"help": "Continue training this LoRA adapter instead of a new one."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] = field(
        default_factory=lambda: list(ALL_LINEAR),
        metadata={"help": "Module names that get adapters (default: every linear layer)."},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    num_epochs: int = field(default=2, metadata={"help": "Passes over the training split."})
    batch_size: int = field(default=8, metadata={"help": "Examples per forward pass."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Forward passes per optimizer step."}
    )
    max_length: int = field(default=256, metadata={"help": "Tokens per example, at most."})
    packing: str = field(
        default="shared_prefix",
        metadata={
            "help": "shared_prefix: a batch's examples share rows with no padding and their "
            "common prompt prefix runs once; flatten: the same without sharing; none: "
            "length-grouped batches padded to the longest (any attention implementation)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for init, dropout and batch order."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    checkpoint_every_steps: int = field(
        default=50, metadata={"help": "Checkpoint every N steps (and at every epoch end)."}
    )
    eval_every_steps: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate every N optimizer steps as well as at every epoch end, keeping the "
            "adapter with the best eval loss (None: epoch ends only)."
        },
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "Checkpoints kept on disk."})
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many steps: inside the last epoch, so the learning rate "
            "reaches zero where training ends (the recipe's choice for small data), or a "
            "smoke run."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})
    resume: bool = field(default=True, metadata={"help": "Resume from the last checkpoint."})
    world_size: int = field(
        default=1,
        metadata={
            "help": "Processes training together under torch.distributed (one per GPU, or CPU "
            "processes). Above 1, `run` starts them with torchrun (training_app.training.launch); "
            "the global batch stays batch_size x gradient_accumulation_steps."
        },
    )
    quantization: str = field(
        default="none",
        metadata={"help": "none, or 4bit: QLoRA on an NF4 base (CUDA and bitsandbytes only)."},
    )
    time_limit_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Fail (keeping the last checkpoint) once training has run this long; checked "
            "before every step."
        },
    )


@dataclass
class Progress:
    step: int
    total_steps: int
    epoch: int
    loss: float
    learning_rate: float
    tokens_per_second: float
    eta_seconds: float
    elapsed_seconds: float
    # Where the epochs end (the last may stop early at max_steps): the worker checks its lease
    # before each epoch-end checkpoint. 0: not reported (a caller built before it existed).
    steps_per_epoch: int = 0


@dataclass
class TrainingResult:
    adapter_dir: str
    steps: int
    total_steps: int
    epochs_done: int
    final_train_loss: float | None
    eval_history: list[dict[str, float]]
    best_eval_loss: float | None
    best_step: int | None
    train_tokens: int
    tokens_per_second: float
    step_seconds: float  # forward, backward and optimizer time only (no eval, no checkpoints)
    computed_tokens: int  # tokens the model ran: fewer than train_tokens when prefixes are shared
    seconds: float
    resumed_from_step: int | None
    device: str
    dtype: str
    train_examples: dict[str, int]
    eval_examples: dict[str, int]
    trainable_parameters: int
    loss_history: list[list[float]]
    # What ran, for the lineage record (the worker's trainer config copies these).
    world_size: int = 1
    devices: list[str] = field(default_factory=list)  # one per rank: "cpu", "cuda:0", ...
    backend: str | None = None  # torch.distributed backend (gloo, nccl); None for one process
    packing: str = ""
    precision: str = ""  # "bf16", "fp32", "nf4 base + bf16 compute"
    quantization: str = "none"
    global_batch_size: int = 0  # examples per optimizer step, over all ranks
    per_rank_batch_size: int = 0  # examples per forward pass on one rank, at most
    per_rank_accumulation: int = 0  # forward passes per rank and optimizer step, at most
    launcher: str = "in-process"  # or "torchrun"
    peak_memory_mib: float | None = None  # rank 0: CUDA memory allocated, or the process's RSS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingCancelled(Exception):
    """The caller asked to stop; raised between two steps."""


class TrainingFailed(Exception):
    """The run cannot succeed (NaN loss, out of memory, no data): the reason is the message."""


class TrainingHooks:
    """What the caller sees of a run. Signoff's worker writes these to the database."""

    def should_stop(self) -> bool:
        return False

    def on_progress(self, progress: Progress) -> None:
        pass

    def on_eval(self, *, step: int, epoch: int, eval_loss: float) -> None:
        pass

    def on_checkpoint(self, *, step: int, path: str) -> None:
        pass

    def on_model_loaded(self, *, seconds: float) -> None:
        pass

    def on_log(self, line: str) -> None:
        pass
