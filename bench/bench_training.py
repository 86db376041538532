"""Measure the default recipe on the demo data: tokens/s, minutes, eval loss base vs trained.

    .venv/bin/python bench/bench_training.py [--epochs 2] [--out var/bench-training]

Trains SmolLM2-135M-Instruct (prepared by `manage.py prepare_base_model`) on the demo's
reviewed answers (wrong ones replaced by the reviewers' house-style corrections), holding out
every tenth question for evaluation, and compares the result with the bare base model. No
Django: it drives `training_app.training` directly, as the worker does.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reviews.demo_data import demo_items  # noqa: E402
from training_app.training.data import write_jsonl  # noqa: E402
from training_app.training.evaluate import EvaluationArguments  # noqa: E402
from training_app.training.evaluate import run as evaluate  # noqa: E402
from training_app.training.hyperparameters import DEFAULTS  # noqa: E402
from training_app.training.trainer import TrainingArguments, TrainingHooks, run  # noqa: E402


def splits(count: int) -> tuple[list[dict], list[dict]]:
    train, evals = [], []
    for payload, right in demo_items(count):
        row = {
            "example_id": payload["external_id"],
            "messages": [*payload["input"], {"role": "assistant", "content": right}],
            "weight": 1.0,
        }
        bucket = int(hashlib.sha256(payload["external_id"].encode()).hexdigest(), 16) % 10
        (evals if bucket == 0 else train).append(row)
    return train, evals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "var/models/smollm2-135m-instruct"))
    parser.add_argument("--out", default=str(ROOT / "var/bench-training"))
    parser.add_argument("--outputs", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=DEFAULTS["num_epochs"])
    parser.add_argument("--samples", type=int, default=8)
    options = parser.parse_args()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    train, evals = splits(options.outputs)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", evals)
    params = {k: v for k, v in DEFAULTS.items() if k != "max_steps"}
    params["num_epochs"] = options.epochs

    class Print(TrainingHooks):
        def on_progress(self, p):
            print(
                f"step {p.step}/{p.total_steps} loss {p.loss:.3f} "
                f"{p.tokens_per_second:.0f} tok/s eta {p.eta_seconds:.0f}s",
                flush=True,
            )

        def on_log(self, line):
            print(line, flush=True)

    started = time.monotonic()
    result = run(
        TrainingArguments(
            base_model_path=options.model,
            train_file=str(out / "train.jsonl"),
            eval_file=str(out / "eval.jsonl"),
            output_dir=str(out / "run"),
            resume=False,
            **params,
        ),
        Print(),
    )
    trained_at = time.monotonic()
    comparison = evaluate(
        EvaluationArguments(
            base_model_path=options.model,
            candidate_adapter_path=result.adapter_dir,
            eval_file=str(out / "eval.jsonl"),
            generation_samples=options.samples,
            max_new_tokens=80,
        )
    )
    report = {
        "train_examples": len(train),
        "eval_examples": len(evals),
        "hyperparameters": params,
        "steps": result.steps,
        "train_minutes": round((trained_at - started) / 60, 2),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "eval_history": result.eval_history,
        "eval_minutes": round(comparison.seconds / 60, 2),
        "trained": comparison.candidate,
        "base": comparison.reference,
        "sample": comparison.samples[:2],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
