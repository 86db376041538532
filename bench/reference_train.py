"""The reference for `bench_training.py`: the LoRA loop a user would write with plain
transformers + peft, with Signoff's default recipe.

Random batches padded to the longest example in the batch, no packing, the loss from the
model's own `labels` argument (logits over every position), AdamW with the same linear
warmup/decay schedule, gradient clipping and number of optimizer steps as Signoff's trainer.
The examples are Signoff's encoded examples (same tokens, loss on the answer only), so the
eval loss, measured with the trainer's own `evaluate_loss`, compares like with like.

    .venv/bin/python bench/reference_train.py --model var/models/smollm2-135m-instruct \\
        --train train.jsonl --eval eval.jsonl --steps 20
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training_app.training.data import IGNORE_INDEX, encode_all, read_jsonl  # noqa: E402
from training_app.training.hyperparameters import DEFAULTS  # noqa: E402
from training_app.training.trainer import TrainingArguments  # noqa: E402

# Not user-facing hyperparameters: the trainer's own defaults.
MAX_GRAD_NORM = TrainingArguments.__dataclass_fields__["max_grad_norm"].default


def reference_train(
    *, model_dir: str, train_file: str, eval_file: str, steps: int, device: str = "cpu"
) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training_app.training.trainer import evaluate_loss

    torch.manual_seed(DEFAULTS["seed"])
    if device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    max_length = DEFAULTS["max_length"]
    train, _ = encode_all(tokenizer, read_jsonl(train_file), max_length)
    evals, _ = encode_all(tokenizer, read_jsonl(eval_file), max_length)

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    model = get_peft_model(
        model,
        LoraConfig(
            r=DEFAULTS["lora_r"],
            lora_alpha=DEFAULTS["lora_alpha"],
            lora_dropout=DEFAULTS["lora_dropout"],
            target_modules=DEFAULTS["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )

    def pad_to_longest(batch):
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), pad_id)
        labels = torch.full((len(batch), width), IGNORE_INDEX)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, example in enumerate(batch):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    generator = torch.Generator().manual_seed(DEFAULTS["seed"])
    loader = DataLoader(
        train,
        batch_size=DEFAULTS["batch_size"],
        shuffle=True,
        collate_fn=pad_to_longest,
        generator=generator,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=DEFAULTS["learning_rate"], weight_decay=DEFAULTS["weight_decay"]
    )
    warmup = int(steps * DEFAULTS["warmup_ratio"])

    def schedule(step: int) -> float:  # the trainer's: linear warmup, then linear decay to 0
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    step, tokens, padded_tokens, step_seconds, losses = 0, 0, 0, 0.0, []
    batches = iter(loader)
    while step < steps:
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()  # batching counts, as packing does in the trainer
        batch = next(batches, None)
        if batch is None:  # next epoch, reshuffled
            batches = iter(loader)
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if device == "cuda":
            torch.cuda.synchronize()
        step_seconds += time.perf_counter() - started
        tokens += int(batch["attention_mask"].sum())
        padded_tokens += batch["input_ids"].numel()
        step += 1
    eval_loss = evaluate_loss(
        model, evals, pad_id=pad_id, device=device, batch_size=DEFAULTS["batch_size"]
    )
    return {
        "steps": step,
        "train_tokens": tokens,
        "computed_tokens": tokens,  # the real (non-pad) tokens; padding is computed too
        "padded_tokens": padded_tokens,
        "step_seconds": step_seconds,
        "final_train_loss": losses[-1],
        "eval_loss": eval_loss,
        "eval_perplexity": math.exp(min(eval_loss, 50.0)),
        "parameters": sum(p.numel() for p in model.get_base_model().parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()
    result = reference_train(
        model_dir=options.model,
        train_file=options.train,
        eval_file=options.eval,
        steps=options.steps,
        device=options.device,
    )
    result["tokens_per_second"] = result["train_tokens"] / result["step_seconds"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
