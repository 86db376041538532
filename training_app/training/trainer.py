"""LoRA supervised fine-tuning of a causal LM on chat examples, CPU or GPU.

Shaped like peft's and trl's example scripts: a dataclass of arguments, `run(args)`, resume from
the last checkpoint, adapters saved as safetensors. Signoff calls `run` from its Dramatiq worker
with hooks that write progress to the database; it also runs alone:

    python -m training_app.training.trainer --base_model_path var/models/smollm2-135m-instruct \
        --train_file train.jsonl --eval_file eval.jsonl --output_dir out/
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# The arguments, runtime and losses live in their own modules; their names are re-exported here
# because callers (the worker, serving, tests, bench) import them from the trainer.
from .arguments import (
    Progress,
    TrainingArguments,
    TrainingCancelled,
    TrainingFailed,
    TrainingHooks,
    TrainingResult,
)
from .base_model import check_folder
from .data import (
    IGNORE_INDEX,
    PACKING_MODES,
    EncodeStats,
    chunked,
    collate,
    encode_all,
    length_grouped_batches,
    pack,
    read_jsonl,
    shuffled_batches,
)
from .losses import evaluate_loss, packed_token_losses, token_losses, torch_min
from .runtime import (
    _checkpoints,
    _lr_lambda,
    is_out_of_memory,
    last_checkpoint,
    load_base_model,
    load_tokenizer,
    resolve_device,
    set_seed,
)

__all__ = [
    "PACK_ROW_TOKENS",
    "Progress",
    "TrainingArguments",
    "TrainingCancelled",
    "TrainingFailed",
    "TrainingHooks",
    "TrainingResult",
    "evaluate_loss",
    "is_out_of_memory",
    "last_checkpoint",
    "load_base_model",
    "load_tokenizer",
    "main",
    "packed_token_losses",
    "resolve_device",
    "run",
    "set_seed",
    "token_losses",
    "torch_min",
]


# Packed rows hold up to this many tokens (or max_length, if longer): long enough that a batch
# of short chat examples fits in one row, short enough that attention over the whole row (the
# mask hides other examples, but the kernel still visits them) stays cheap next to the rest.
PACK_ROW_TOKENS = 1024


class _Run:
    """One training run's mutable state; `TrainingArguments` stays a plain record."""

    def __init__(self, args: TrainingArguments, hooks: TrainingHooks):
        self.args = args
        self.hooks = hooks
        self.out = Path(args.output_dir)
        self.state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "loss_history": [],
            "eval_history": [],
            "best_eval_loss": None,
            "best_step": None,
            "train_tokens": 0,
            "computed_tokens": 0,
        }

    def log(self, line: str) -> None:
        self.hooks.on_log(line)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, model, optimizer, scheduler) -> Path:
        import torch

        root = self.out / "checkpoints"
        final = root / f"step-{self.state['step']:06d}"
        tmp = root / f".tmp-step-{self.state['step']:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        (tmp / "python_rng.json").write_text(json.dumps(random.getstate()))
        # Written last: a folder without it is an interrupted save and is never resumed from.
        (tmp / "trainer_state.json").write_text(json.dumps(self.state))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in _checkpoints(root)[: -max(1, self.args.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        self.hooks.on_checkpoint(step=self.state["step"], path=str(final))
        self.log(f"checkpoint at step {self.state['step']}: {final}")
        return final

    def load_checkpoint(self, path: Path, model, optimizer, scheduler) -> None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
        set_peft_model_state_dict(model, weights)
        # weights_only: these files hold tensors and numbers; nothing in them may run code.
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = torch.load(path / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        state = json.loads((path / "python_rng.json").read_text())
        random.setstate((state[0], tuple(state[1]), state[2]))
        self.state = json.loads((path / "trainer_state.json").read_text())


def _build_model(args: TrainingArguments, device: str, dtype: Any):
    from peft import LoraConfig, PeftModel, get_peft_model

    model = load_base_model(args.base_model_path, device=device, dtype=dtype)
    if args.parent_adapter_path:
        model = PeftModel.from_pretrained(model, args.parent_adapter_path, is_trainable=True)
    else:
        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=list(args.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    return model.to(device)


def run(args: TrainingArguments, hooks: TrainingHooks | None = None) -> TrainingResult:
    """Train, evaluating every epoch and keeping the adapter with the best eval loss."""
    import torch

    hooks = hooks or TrainingHooks()
    started = time.monotonic()
    set_seed(args.seed)
    device, dtype = resolve_device(args.device)
    job = _Run(args, hooks)
    job.out.mkdir(parents=True, exist_ok=True)

    check_folder(Path(args.base_model_path))  # before anything reads from the folder
    tokenizer = load_tokenizer(args.base_model_path)
    pad_id = int(tokenizer.pad_token_id)
    train, train_stats = encode_all(tokenizer, read_jsonl(args.train_file), args.max_length)
    evals, eval_stats = (
        encode_all(tokenizer, read_jsonl(args.eval_file), args.max_length)
        if args.eval_file
        else ([], EncodeStats())
    )
    if not train:
        raise TrainingFailed("the training split has no usable examples")
    if args.packing not in PACKING_MODES:
        raise TrainingFailed(f"packing must be one of {', '.join(PACKING_MODES)}")
    job.log(
        f"{train_stats.kept} training examples ({train_stats.truncated} truncated, "
        f"{train_stats.dropped} dropped), {eval_stats.kept} eval examples; device {device}"
    )

    load_started = time.monotonic()
    model = _build_model(args, device, dtype)
    hooks.on_model_loaded(seconds=time.monotonic() - load_started)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    lengths = [len(e.input_ids) for e in train]
    batches_per_epoch = math.ceil(len(train) / args.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.num_epochs
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, int(total_steps * args.warmup_ratio))
    )

    resumed_from = None
    checkpoint = last_checkpoint(args.output_dir) if args.resume else None
    if checkpoint is not None:
        job.load_checkpoint(checkpoint, model, optimizer, scheduler)
        resumed_from = job.state["step"]
        job.log(f"resumed from {checkpoint} (step {resumed_from})")

    state = job.state
    session_tokens, session_steps, session_start = 0, 0, time.monotonic()
    step_seconds = 0.0
    best_dir = job.out / "best-adapter"

    def evaluate_now(epoch: int) -> None:
        loss = evaluate_loss(
            model, evals, pad_id=pad_id, device=device, batch_size=args.batch_size, hooks=hooks
        )
        state["eval_history"].append({"step": state["step"], "epoch": epoch, "eval_loss": loss})
        hooks.on_eval(step=state["step"], epoch=epoch, eval_loss=loss)
        job.log(f"epoch {epoch}: eval loss {loss:.4f} at step {state['step']}")
        if state["best_eval_loss"] is None or loss < state["best_eval_loss"]:
            state["best_eval_loss"], state["best_step"] = loss, state["step"]
            shutil.rmtree(best_dir, ignore_errors=True)
            model.save_pretrained(str(best_dir), safe_serialization=True)

    model.train()
    stop = False
    for epoch in range(state["epoch"], args.num_epochs):
        # Packed rows carry no padding, so batches need not be grouped by length.
        if args.packing == "none":
            order = length_grouped_batches(lengths, args.batch_size, seed=args.seed, epoch=epoch)
        else:
            order = shuffled_batches(len(train), args.batch_size, seed=args.seed, epoch=epoch)
        groups = list(chunked(order, args.gradient_accumulation_steps))
        for local, group in enumerate(groups):
            if epoch * steps_per_epoch + local < state["step"]:
                continue  # done before the checkpoint we resumed from
            if hooks.should_stop():
                raise TrainingCancelled()
            step_started = time.monotonic()
            try:
                loss, tokens, computed = _step(
                    model,
                    optimizer,
                    scheduler,
                    group,
                    train,
                    pad_id,
                    device,
                    args,
                    trainable,
                    state["step"],
                )
            except (TrainingFailed, TrainingCancelled):
                raise
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise TrainingFailed(
                        f"out of memory at step {state['step'] + 1}: {exc}"
                    ) from exc
                raise
            state["step"] += 1
            state["train_tokens"] += tokens
            state["computed_tokens"] = state.get("computed_tokens", 0) + computed
            step_seconds += time.monotonic() - step_started
            session_tokens += tokens
            session_steps += 1
            lr = scheduler.get_last_lr()[0]
            state["loss_history"].append([state["step"], loss, lr])
            elapsed = time.monotonic() - session_start
            hooks.on_progress(
                Progress(
                    step=state["step"],
                    total_steps=total_steps,
                    epoch=epoch,
                    loss=loss,
                    learning_rate=lr,
                    tokens_per_second=session_tokens / max(elapsed, 1e-9),
                    eta_seconds=(total_steps - state["step"]) * elapsed / session_steps,
                    elapsed_seconds=time.monotonic() - started,
                )
            )
            last_of_epoch = local == len(groups) - 1
            if args.max_steps and state["step"] >= args.max_steps:
                stop = True
                break
            if (
                args.checkpoint_every_steps
                and state["step"] % args.checkpoint_every_steps == 0
                and not last_of_epoch
            ):
                job.save_checkpoint(model, optimizer, scheduler)
        if evals:
            evaluate_now(epoch)
        state["epoch"] = epoch + 1
        if stop:
            break
        job.save_checkpoint(model, optimizer, scheduler)

    final_dir = job.out / "adapter"
    shutil.rmtree(final_dir, ignore_errors=True)
    if best_dir.is_dir():
        shutil.copytree(best_dir, final_dir)
    else:
        model.save_pretrained(str(final_dir), safe_serialization=True)
    job.log(f"adapter saved to {final_dir}")
    seconds = time.monotonic() - started
    history = state["loss_history"]
    return TrainingResult(
        adapter_dir=str(final_dir),
        steps=state["step"],
        total_steps=total_steps,
        epochs_done=state["epoch"],
        final_train_loss=history[-1][1] if history else None,
        eval_history=state["eval_history"],
        best_eval_loss=state["best_eval_loss"],
        best_step=state["best_step"],
        train_tokens=state["train_tokens"],
        tokens_per_second=session_tokens / max(time.monotonic() - session_start, 1e-9),
        step_seconds=step_seconds,
        computed_tokens=state.get("computed_tokens", 0),
        seconds=seconds,
        resumed_from_step=resumed_from,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        train_examples=asdict(train_stats),
        eval_examples=asdict(eval_stats),
        trainable_parameters=n_trainable,
        loss_history=history,
    )


def _step(model, optimizer, scheduler, group, train, pad_id, device, args, trainable, step):
    """One optimizer step over `group` (gradient accumulation). The loss is the weighted mean
    over every answer token of the whole group, so it does not depend on how it is split or
    packed. Returns (loss, the examples' tokens, the tokens the model actually ran)."""
    import torch

    total, tokens, computed = 0.0, 0, 0
    if args.packing == "none":
        batches = [collate([train[i] for i in indices], pad_id) for indices in group]
        denominator = sum(
            float(((b["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1) * b["weights"]).sum())
            for b in batches
        )
    else:
        share = args.packing == "shared_prefix"
        row_tokens = max(PACK_ROW_TOKENS, args.max_length)
        batches = [
            pack([train[i] for i in indices], pad_id, share_prefix=share, row_tokens=row_tokens)
            for indices in group
        ]
        denominator = sum(float(b["weights"].sum()) for b in batches)
    for batch in batches:
        if args.packing == "none":
            sums, _counts = token_losses(model, batch, device)
            loss = (sums * batch["weights"].to(device)).sum() / max(denominator, 1.0)
            batch_tokens = int(batch["attention_mask"].sum())
            computed += batch_tokens
        else:
            losses = packed_token_losses(model, batch, device)
            loss = (losses * batch["weights"].to(device)).sum() / max(denominator, 1.0)
            batch_tokens = batch["example_tokens"]
            computed += batch["processed_tokens"]
        if not torch.isfinite(loss):
            raise TrainingFailed(f"loss is {float(loss.detach())} at step {step + 1}")
        loss.backward()
        total += float(loss.detach())
        tokens += batch_tokens
    norm = torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
    if not torch.isfinite(norm):
        raise TrainingFailed(f"gradient norm is {float(norm)} at step {step + 1}")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total, tokens, computed


def main() -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses()

    class PrintHooks(TrainingHooks):
        def on_progress(self, p: Progress) -> None:
            print(
                f"step {p.step}/{p.total_steps} loss {p.loss:.4f} {p.tokens_per_second:.0f} tok/s"
            )

        def on_log(self, line: str) -> None:
            print(line)

    result = run(args, PrintHooks())
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "loss_history"}, indent=2))


if __name__ == "__main__":
    main()
