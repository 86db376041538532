"""LoRA supervised fine-tuning of a causal LM on chat examples, CPU or GPU.

Shaped like peft's and trl's example scripts: a dataclass of arguments, `run(args)`, resume from
the last checkpoint, adapters saved as safetensors. Signoff calls `run` from its Dramatiq worker
with hooks that write progress to the database; it also runs alone:

    python -m training_app.training.trainer --base_model_path var/models/smollm2-135m-instruct \
        --train_file train.jsonl --eval_file eval.jsonl --output_dir out/
"""

from __future__ import annotations

import contextlib
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
    PACKING_MODES,
    EncodeStats,
    chunked,
    collate,
    encode_all,
    length_grouped_batches,
    loss_weight,
    pack,
    rank_micro_batches,
    read_jsonl,
    shuffled_batches,
)
from .distributed import Ranks
from .losses import evaluate_loss, evaluate_sums, packed_token_losses, token_losses, torch_min
from .runtime import (
    _checkpoints,
    _lr_lambda,
    check_machine,
    is_out_of_memory,
    last_checkpoint,
    load_base_model,
    load_tokenizer,
    precision_name,
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


# Rank 0's decision before every step, broadcast to every rank.
_GO, _CANCEL, _TIME_LIMIT = 0, 1, 2


class _Run:
    """One training run's mutable state; `TrainingArguments` stays a plain record."""

    def __init__(self, args: TrainingArguments, hooks: TrainingHooks, ranks: Ranks):
        self.args = args
        self.hooks = hooks
        self.ranks = ranks
        self.out = Path(args.output_dir)
        self.saved_step: int | None = None
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
    def save_checkpoint(self, model, optimizer, scheduler) -> Path | None:
        """Every rank calls this (its RNG state is gathered); rank 0 alone writes.

        Adapter, optimizer and scheduler are the same on every rank (DDP keeps the replicas
        equal), so one copy serves any world size on resume; only the RNG states are per rank."""
        import torch

        states = self.ranks.gather(_rng_state())
        self.saved_step = self.state["step"]
        if not self.ranks.is_main:
            return None
        root = self.out / "checkpoints"
        final = root / f"step-{self.state['step']:06d}"
        tmp = root / f".tmp-step-{self.state['step']:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        # Top-level keys: rank 0's state, as one process always wrote it (older checkpoints
        # have nothing else); "ranks": every rank's, in rank order.
        rng: dict[str, Any] = {"torch": states[0]["torch"], "world_size": self.ranks.world_size}
        if "cuda_all" in states[0]:
            rng["cuda"] = states[0]["cuda_all"]
        rng["ranks"] = [{k: v for k, v in st.items() if k != "python"} for st in states]
        torch.save(rng, tmp / "rng.pt")
        (tmp / "python_rng.json").write_text(json.dumps(states[0]["python"]))
        (tmp / "python_rng_ranks.json").write_text(json.dumps([st["python"] for st in states]))
        # Written last: a folder without it is an interrupted save and is never resumed from.
        (tmp / "trainer_state.json").write_text(
            json.dumps({**self.state, "world_size": self.ranks.world_size})
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in _checkpoints(root)[: -max(1, self.args.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        self.hooks.on_checkpoint(step=self.state["step"], path=str(final))
        self.log(f"checkpoint at step {self.state['step']}: {final}")
        return final

    def load_checkpoint(self, path: Path, model, optimizer, scheduler) -> None:
        """Resume on any world size. A rank finds its own RNG state when the checkpoint was
        written by as many ranks; otherwise rank 0 takes rank 0's and the others reseed from
        (seed, rank, step), so the continuation is still reproducible."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
        set_peft_model_state_dict(model, weights)
        # weights_only: these files hold tensors and numbers; nothing in them may run code.
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        self.state = json.loads((path / "trainer_state.json").read_text())
        saved_world = int(self.state.pop("world_size", 1))
        rng = torch.load(path / "rng.pt", weights_only=True)
        rank = self.ranks.rank
        per_rank = rng.get("ranks") or [{"torch": rng["torch"], "cuda": None}]
        pythons_file = path / "python_rng_ranks.json"
        pythons = (
            json.loads(pythons_file.read_text())
            if pythons_file.is_file()
            else [json.loads((path / "python_rng.json").read_text())]
        )
        if rank == 0 or saved_world == self.ranks.world_size:
            mine = per_rank[rank] if rank < len(per_rank) else per_rank[0]
            torch.set_rng_state(mine["torch"])
            if torch.cuda.is_available():
                if mine.get("cuda") is not None:
                    torch.cuda.set_rng_state(mine["cuda"])
                elif "cuda" in rng and not self.ranks.distributed:  # written before "ranks"
                    torch.cuda.set_rng_state_all(rng["cuda"])
            state = pythons[rank] if rank < len(pythons) else pythons[0]
            random.setstate((state[0], tuple(state[1]), state[2]))
        else:
            set_seed(_rank_seed(self.args.seed, rank) + self.state["step"])


def _rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the run's seed (one process and rank 0 draw the same numbers); the others
    get their own dropout streams."""
    return seed + 1_000_003 * rank


def _rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
        state["cuda_all"] = torch.cuda.get_rng_state_all()
    return state


def _build_model(args: TrainingArguments, device: str, dtype: Any):
    from peft import LoraConfig, PeftModel, get_peft_model

    model = load_base_model(
        args.base_model_path, device=device, dtype=dtype, quantization=args.quantization
    )
    if args.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
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
    return model if args.quantization == "4bit" else model.to(device)


def run(args: TrainingArguments, hooks: TrainingHooks | None = None) -> TrainingResult:
    """Train, evaluating at every epoch end (and every `eval_every_steps` steps, if set) and
    keeping the adapter with the best eval loss.

    One process (world_size 1) trains here, in the caller's process. With world_size above 1,
    called outside torchrun, this starts the processes (`launch.launch`) and relays their
    progress to `hooks`; inside torchrun every rank runs the same loop (`rank.py`)."""
    ranks = Ranks.from_environment()
    if not ranks.distributed and args.world_size > 1:
        from .launch import launch

        return launch(args, hooks)
    if ranks.world_size != args.world_size:
        raise TrainingFailed(
            f"started as {ranks.world_size} processes but world_size is {args.world_size}"
        )
    try:
        return _train(args, hooks or TrainingHooks(), ranks)
    finally:
        ranks.close()


def _train(args: TrainingArguments, hooks: TrainingHooks, ranks: Ranks) -> TrainingResult:
    import torch

    started = time.monotonic()
    set_seed(args.seed)
    kind, dtype = resolve_device(args.device, processes=ranks.local_world_size)
    check_machine(world_size=args.world_size, quantization=args.quantization, device=kind)
    device = f"cuda:{ranks.local_rank}" if kind == "cuda" and ranks.distributed else kind
    ranks.start(device)
    job = _Run(args, hooks, ranks)
    if ranks.is_main:
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
        + (f", rank {ranks.rank} of {ranks.world_size}" if ranks.distributed else "")
    )

    load_started = time.monotonic()
    model = _build_model(args, device, dtype)
    hooks.on_model_loaded(seconds=time.monotonic() - load_started)
    if ranks.rank > 0:
        set_seed(_rank_seed(args.seed, ranks.rank))  # after the (identical) adapter init
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
        job.saved_step = resumed_from
        job.log(f"resumed from {checkpoint} (step {resumed_from})")

    forward = model
    if ranks.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Gradients are averaged over ranks; buffers (rotary tables) are equal everywhere.
        forward = DistributedDataParallel(
            model,
            device_ids=[ranks.local_rank] if kind == "cuda" else None,
            broadcast_buffers=False,
        )

    state = job.state
    session_tokens, session_steps, session_start = 0, 0, time.monotonic()
    step_seconds = 0.0
    best_dir = job.out / "best-adapter"
    merge = args.packing != "none"
    global_batch = args.batch_size * args.gradient_accumulation_steps
    # What one rank runs in a full step, for the record: the plan of rank 0 for a full group.
    full = [
        list(range(k * args.batch_size, (k + 1) * args.batch_size))
        for k in range(args.gradient_accumulation_steps)
    ]
    plan = rank_micro_batches(
        full, rank=0, world_size=ranks.world_size, batch_size=args.batch_size, merge=merge
    )

    def evaluate_now(epoch: int, *, epoch_end: bool = True) -> None:
        # Each rank scores every world_size-th eval example; mid-eval cancel only for one
        # process (a rank leaving a collective early would hang the others).
        total, count = evaluate_sums(
            model,
            evals,
            pad_id=pad_id,
            device=device,
            batch_size=args.batch_size,
            hooks=None if ranks.distributed else hooks,
            rank=ranks.rank,
            world_size=ranks.world_size,
        )
        total, count = ranks.sum([total, count])
        loss = total / max(count, 1.0)
        state["eval_history"].append({"step": state["step"], "epoch": epoch, "eval_loss": loss})
        hooks.on_eval(step=state["step"], epoch=epoch, eval_loss=loss)
        where = f"epoch {epoch}" if epoch_end else f"step {state['step']} (epoch {epoch})"
        job.log(f"{where}: eval loss {loss:.4f} at step {state['step']}")
        if state["best_eval_loss"] is None or loss < state["best_eval_loss"]:
            state["best_eval_loss"], state["best_step"] = loss, state["step"]
            if ranks.is_main:
                _save_adapter(model, best_dir)

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
            decision = _GO
            if ranks.is_main:
                if hooks.should_stop():
                    decision = _CANCEL
                elif args.time_limit_seconds and (
                    time.monotonic() - started >= args.time_limit_seconds
                ):
                    decision = _TIME_LIMIT
            decision = ranks.broadcast_int(decision)
            if decision == _CANCEL:
                raise TrainingCancelled()
            if decision == _TIME_LIMIT:
                if job.saved_step != state["step"]:
                    job.save_checkpoint(model, optimizer, scheduler)
                raise TrainingFailed(
                    f"time limit of {args.time_limit_seconds:g} s reached after step "
                    f"{state['step']} of {total_steps}; the checkpoint at step {state['step']} "
                    "is kept for a retry"
                )
            step_started = time.monotonic()
            micro = rank_micro_batches(
                group,
                rank=ranks.rank,
                world_size=ranks.world_size,
                batch_size=args.batch_size,
                merge=merge,
            )
            denominator = sum(loss_weight(train[i]) for batch in group for i in batch)
            try:
                loss, tokens, computed = _step(
                    forward,
                    optimizer,
                    scheduler,
                    micro,
                    group,
                    denominator,
                    train,
                    pad_id,
                    device,
                    args,
                    trainable,
                    state["step"],
                    ranks=ranks,
                )
            except (TrainingFailed, TrainingCancelled):
                raise
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise TrainingFailed(
                        f"out of memory at step {state['step'] + 1}"
                        + (f" on rank {ranks.rank}" if ranks.distributed else "")
                        + f": {exc}"
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
                    steps_per_epoch=steps_per_epoch,
                )
            )
            last_of_epoch = local == len(groups) - 1
            if args.max_steps and state["step"] >= args.max_steps:
                stop = True
                break
            # Between epoch ends too; the step that ends an epoch (or the run) is evaluated
            # below, once. Every rank takes part (the eval loss is summed over ranks), and it
            # comes before the checkpoint, so a resumed run finds it in the saved state.
            if (
                evals
                and args.eval_every_steps
                and state["step"] % args.eval_every_steps == 0
                and not last_of_epoch
            ):
                evaluate_now(epoch, epoch_end=False)
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
    if ranks.is_main:
        # Renamed into place: a run killed while saving leaves no half-written adapter.
        if best_dir.is_dir():
            tmp = final_dir.with_name(".adapter.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(best_dir, tmp)
            shutil.rmtree(final_dir, ignore_errors=True)
            tmp.rename(final_dir)
        else:
            _save_adapter(model, final_dir)
        job.log(f"adapter saved to {final_dir}")
    ranks.barrier()  # no rank reports success before the adapter is in place
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
        device=kind,
        dtype=str(dtype).removeprefix("torch."),
        train_examples=asdict(train_stats),
        eval_examples=asdict(eval_stats),
        trainable_parameters=n_trainable,
        loss_history=history,
        world_size=ranks.world_size,
        devices=_devices(kind, ranks.world_size),
        backend=ranks.backend,
        packing=args.packing,
        precision=precision_name(dtype, args.quantization),
        quantization=args.quantization,
        global_batch_size=global_batch,
        per_rank_batch_size=max(len(m) for m in plan),
        per_rank_accumulation=len(plan),
        peak_memory_mib=_peak_memory_mib(kind),
    )


def _peak_memory_mib(kind: str) -> float:
    import resource

    import torch

    if kind == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _devices(kind: str, world_size: int) -> list[str]:
    if kind == "cuda":
        return [f"cuda:{rank}" for rank in range(world_size)]
    return ["cpu"] * world_size


def _save_adapter(model, folder: Path) -> None:
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _step(
    forward,
    optimizer,
    scheduler,
    micro,
    group,
    denominator,
    train,
    pad_id,
    device,
    args,
    trainable,
    step,
    *,
    ranks,
):
    """One optimizer step over the global batch `group`, of which this rank runs `micro`.

    The loss is the weighted mean over every answer token of the whole global batch (the
    denominator counts all of them, on every rank), so it does not depend on how the batch is
    split into micro-batches, packed, or shared out among ranks. DDP averages gradients over
    ranks: each rank's part is multiplied by the world size so the average is the sum. Returns
    (loss, the examples' tokens, the tokens the model actually ran), summed over ranks."""
    import torch

    ddp = ranks.distributed
    # A rank with nothing in this step still joins DDP's gradient all-reduce: one example
    # at weight zero.
    passes = micro or [group[0][:1]]
    scale = (ranks.world_size if ddp else 1) * (1.0 if micro else 0.0)
    total, tokens, computed = 0.0, 0, 0
    for index, indices in enumerate(passes):
        examples = [train[i] for i in indices]
        sync = not ddp or index == len(passes) - 1
        with contextlib.nullcontext() if sync else forward.no_sync():
            if args.packing == "none":
                batch = collate(examples, pad_id)
                sums, _counts = token_losses(forward, batch, device)
                loss = (sums * batch["weights"].to(device)).sum() / max(denominator, 1.0)
                batch_tokens = int(batch["attention_mask"].sum())
                ran = batch_tokens
            else:
                share = args.packing == "shared_prefix"
                row_tokens = max(PACK_ROW_TOKENS, args.max_length)
                batch = pack(examples, pad_id, share_prefix=share, row_tokens=row_tokens)
                losses = packed_token_losses(forward, batch, device)
                loss = (losses * batch["weights"].to(device)).sum() / max(denominator, 1.0)
                batch_tokens = batch["example_tokens"]
                ran = batch["processed_tokens"]
            (loss * scale if scale != 1 else loss).backward()
        if micro:
            total += float(loss.detach())
            tokens += batch_tokens
            computed += ran
    # A non-finite loss on any rank fails every rank at the same step.
    total, tokens, computed = ranks.sum([total, tokens, computed])
    if not math.isfinite(total):
        raise TrainingFailed(f"loss is {total} at step {step + 1}")
    norm = torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
    if not torch.isfinite(norm):
        raise TrainingFailed(f"gradient norm is {float(norm)} at step {step + 1}")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total, int(tokens), int(computed)


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
