"""Candidate adapter vs a reference (its parent adapter, or the bare base model) on held-out
chat examples: answer loss / perplexity, and greedy generations scored against the reference
answers (exact match, token F1, ROUGE-L, length ratio), with side-by-side samples."""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .arguments import TrainingHooks
from .data import chunked, encode_all, prompt_ids, read_jsonl
from .losses import evaluate_loss
from .runtime import load_base_model, load_tokenizer, resolve_device, set_seed


@dataclass
class EvaluationArguments:
    base_model_path: str = field(metadata={"help": "Local folder of the base model."})
    candidate_adapter_path: str = field(metadata={"help": "The adapter being evaluated."})
    eval_file: str = field(metadata={"help": "JSONL of {example_id, messages, weight}."})
    reference_adapter_path: str | None = field(
        default=None, metadata={"help": "Compare with this adapter; default the bare base."}
    )
    max_length: int = field(default=256, metadata={"help": "Tokens per example for the loss."})
    generation_samples: int = field(
        default=16, metadata={"help": "Examples answered by both models (greedy)."}
    )
    max_new_tokens: int = field(default=96, metadata={"help": "Tokens generated per answer."})
    batch_size: int = field(default=8, metadata={"help": "Examples per forward pass."})
    seed: int = field(default=0, metadata={"help": "Seed (generation is greedy)."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})


@dataclass
class EvaluationResult:
    candidate: dict[str, float]
    reference: dict[str, float]
    samples: list[dict[str, Any]]
    examples: int
    generated: int
    seconds: float
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_WORD = re.compile(r"\w+(?:[.'\u2019]\w+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalise(text: str) -> str:
    return " ".join(words(text))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return float(pred == ref)
    counts: dict[str, int] = {}
    for word in ref:
        counts[word] = counts.get(word, 0) + 1
    common = 0
    for word in pred:
        if counts.get(word, 0) > 0:
            counts[word] -= 1
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of words."""
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return float(pred == ref)
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if p == r else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def length_ratio(prediction: str, reference: str) -> float:
    return len(words(prediction)) / max(1, len(words(reference)))


def generation_scores(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Mean scores over (prediction, reference) pairs."""
    if not pairs:
        return {}
    n = len(pairs)
    return {
        "exact_match": sum(normalise(p) == normalise(r) for p, r in pairs) / n,
        "token_f1": sum(token_f1(p, r) for p, r in pairs) / n,
        "rouge_l": sum(rouge_l(p, r) for p, r in pairs) / n,
        "length_ratio": sum(length_ratio(p, r) for p, r in pairs) / n,
    }


def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    device: str,
    max_new_tokens: int,
    batch_size: int,
    hooks: TrainingHooks,
) -> list[str]:
    """Greedy answers, batched with left padding."""
    import torch

    pad = int(tokenizer.pad_token_id)
    answers: list[str] = []
    model.eval()
    for group in chunked(prompts, batch_size):
        if hooks.should_stop():
            raise InterruptedError("evaluation stopped")
        width = max(len(p) for p in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, prompt in enumerate(group):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row in out[:, width:]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers


def run(args: EvaluationArguments, hooks: TrainingHooks | None = None) -> EvaluationResult:
    from peft import PeftModel

    hooks = hooks or TrainingHooks()
    started = time.monotonic()
    set_seed(args.seed)
    device, dtype = resolve_device(args.device)
    tokenizer = load_tokenizer(args.base_model_path)
    rows = read_jsonl(args.eval_file)
    examples, _stats = encode_all(tokenizer, rows, args.max_length)
    base = load_base_model(args.base_model_path, device=device, dtype=dtype)
    # One copy of the base weights in memory: both adapters sit on it, switched by name.
    model = PeftModel.from_pretrained(base, args.candidate_adapter_path, adapter_name="candidate")
    if args.reference_adapter_path:
        model.load_adapter(args.reference_adapter_path, adapter_name="reference")
    model.to(device)

    def measure(which: str) -> tuple[dict[str, float], list[str]]:
        hooks.on_log(f"evaluating the {which} on {len(examples)} examples")
        loss = evaluate_loss(
            model,
            examples,
            pad_id=int(tokenizer.pad_token_id),
            device=device,
            batch_size=args.batch_size,
        )
        sample_rows = rows[: args.generation_samples]
        prompts = [prompt_ids(tokenizer, r["messages"][:-1]) for r in sample_rows]
        answers = generate(
            model,
            tokenizer,
            prompts,
            device=device,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            hooks=hooks,
        )
        references = [r["messages"][-1]["content"] for r in sample_rows]
        scores = {
            "eval_loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            **generation_scores(list(zip(answers, references, strict=True))),
        }
        return scores, answers

    model.set_adapter("candidate")
    candidate, candidate_answers = measure("candidate")
    if args.reference_adapter_path:
        model.set_adapter("reference")
        reference, reference_answers = measure("reference")
    else:
        with model.disable_adapter():
            reference, reference_answers = measure("base model")
    samples = []
    for row, cand, ref in zip(rows, candidate_answers, reference_answers, strict=False):
        prompt = row["messages"][:-1]
        samples.append(
            {
                "example_id": row.get("example_id"),
                "prompt": next(
                    (m["content"] for m in reversed(prompt) if m["role"] == "user"),
                    prompt[-1]["content"] if prompt else "",
                ),
                "expected": row["messages"][-1]["content"],
                "candidate": cand,
                "reference": ref,
                "candidate_rouge_l": rouge_l(cand, row["messages"][-1]["content"]),
                "reference_rouge_l": rouge_l(ref, row["messages"][-1]["content"]),
            }
        )
    return EvaluationResult(
        candidate=candidate,
        reference=reference,
        samples=samples,
        examples=len(examples),
        generated=len(candidate_answers),
        seconds=time.monotonic() - started,
        device=device,
    )
