"""Training throughput: Signoff's trainer against the plain transformers + peft loop in
`bench/reference_train.py`, same model, data, LoRA settings and number of optimizer steps.

    .venv/bin/python bench/bench_training.py --quick          # 12 steps each (a few minutes)
    .venv/bin/python bench/bench_training.py                  # the default recipe (2 epochs),
                                                              # reference/Signoff/Signoff/reference
    .venv/bin/python bench/bench_training.py --recipe --epochs 2   # recipe quality vs the base

Tokens/s counts the examples' real tokens (prompt + answer, no padding) trained on, divided by
the time spent in training steps (batching, forward, backward, optimizer; not model loading,
evaluation or checkpoints), so both sides are measured on the same data: Signoff computes fewer
tokens than that when a batch's examples share a prompt prefix, the reference computes more
(padding). Each run is its own child process, so the peak memory (RSS on the CPU,
`torch.cuda.max_memory_allocated` on a GPU) is that run's own. The eval loss of the final
weights is measured by both with the trainer's `evaluate_loss` on the same held-out examples.

On a GPU the MFU is 4·N·tokens/s over the card's peak bf16 FLOP/s (a frozen base: the forward
pass and the backward pass to the activations, ~2·N FLOPs per token each; N = the base's
parameters; tokens = the real tokens the model computed). On the CPU it is reported as n/a.

Trains SmolLM2-135M-Instruct (prepared by `manage.py prepare_base_model`) on the demo's
reviewed answers (wrong ones replaced by the reviewers' house-style corrections), holding out
every tenth question. No Django: it drives `training_app.training` directly, as the worker does.
"""

import argparse
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import verdict, write_result  # noqa: E402

from demo.data import demo_items  # noqa: E402
from training_app.training.data import write_jsonl  # noqa: E402
from training_app.training.hyperparameters import DEFAULTS  # noqa: E402

TARGET_RATIO = 1.5
QUICK_STEPS = 12
# Dense bf16 peak FLOP/s by card name (vendor datasheets, without sparsity).
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}


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


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for name, flops in PEAK_BF16_FLOPS.items():
        if name in device_name:
            return flops
    return None


# -- one run, in a child process ----------------------------------------------------------------


def base_parameters(model_dir: str) -> int:
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += math.prod(weights.get_slice(key).get_shape())
    return total


def child(options: argparse.Namespace) -> None:
    import torch

    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(options.out)
    train_file, eval_file = str(out / "train.jsonl"), str(out / "eval.jsonl")
    if options.child == "reference":
        from reference_train import reference_train

        figures = reference_train(
            model_dir=options.model,
            train_file=train_file,
            eval_file=eval_file,
            steps=options.steps,
            device=device,
        )
    else:
        from training_app.training.trainer import TrainingArguments, run

        params = {k: v for k, v in DEFAULTS.items() if k != "max_steps"}
        params["checkpoint_every_steps"] = 1_000_000  # epoch ends only: not timed anyway
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory(prefix="bench-training-") as work:
            result = run(
                TrainingArguments(
                    base_model_path=options.model,
                    train_file=train_file,
                    eval_file=eval_file,
                    output_dir=work,
                    resume=False,
                    max_steps=options.steps,
                    device=device,
                    **params,
                )
            )
        eval_loss = result.eval_history[-1]["eval_loss"]  # the final weights, as the reference
        figures = {
            "steps": result.steps,
            "train_tokens": result.train_tokens,
            "computed_tokens": result.computed_tokens,
            "step_seconds": result.step_seconds,
            "final_train_loss": result.final_train_loss,
            "eval_loss": eval_loss,
            "eval_perplexity": math.exp(min(eval_loss, 50.0)),
            "parameters": base_parameters(options.model),
        }
    figures["device"] = device
    figures["device_name"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    figures["threads"] = torch.get_num_threads()
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        figures["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(figures))


def spawn(kind: str, options: argparse.Namespace, steps: int) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--steps",
        str(steps),
        "--model",
        options.model,
        "--out",
        options.out,
        "--device",
        options.device,
    ]
    load_before = load_average()
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"the {kind} run failed (exit {done.returncode})")
    figures = json.loads(lines[-1].removeprefix("RESULT "))
    figures["tokens_per_second"] = figures["train_tokens"] / figures["step_seconds"]
    figures["computed_tokens_per_second"] = figures["computed_tokens"] / figures["step_seconds"]
    figures["wall_seconds"] = time.monotonic() - started
    figures["load_before"], figures["load_after"] = load_before, load_average()
    peak = (
        peak_flops(figures["device_name"], options.peak_tflops)
        if figures["device"] == "cuda"
        else None
    )
    figures["mfu"] = (
        4 * figures["parameters"] * figures["computed_tokens_per_second"] / peak if peak else None
    )
    memory = (
        f"peak {figures['peak_cuda_mib']:,.0f} MiB CUDA"
        if "peak_cuda_mib" in figures
        else f"peak RSS {figures['peak_rss_mib']:,.0f} MiB"
    )
    mfu = f"MFU {figures['mfu']:.1%}" if figures["mfu"] is not None else "MFU n/a"
    print(
        f"{kind:9} {figures['steps']} steps: {figures['tokens_per_second']:7.1f} tokens/s "
        f"({figures['computed_tokens_per_second']:.1f} computed), {memory}, {mfu}, "
        f"eval loss {figures['eval_loss']:.4f}, {figures['step_seconds']:.0f} s in steps, "
        f"load {figures['load_before']} -> {figures['load_after']}",
        flush=True,
    )
    return figures


def compare(options: argparse.Namespace) -> None:
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    train, evals = splits(options.outputs)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", evals)
    steps_per_epoch = math.ceil(len(train) / DEFAULTS["batch_size"])
    steps = options.steps or (
        QUICK_STEPS if options.quick else steps_per_epoch * DEFAULTS["num_epochs"]
    )
    repeats = options.repeats or (1 if options.quick else 2)
    # ABBA: reference, Signoff, Signoff, reference, ... so that drifting load hits both alike.
    order = []
    for index in range(repeats):
        pair = ["reference", "signoff"]
        order.extend(pair if index % 2 == 0 else pair[::-1])
    print(
        f"{len(train)} train / {len(evals)} eval examples, {steps} optimizer steps of "
        f"{DEFAULTS['batch_size']} examples, order {' '.join(order)}; load {load_average()}",
        flush=True,
    )
    runs: dict[str, list[dict]] = {"reference": [], "signoff": []}
    for kind in order:
        runs[kind].append(spawn(kind, options, steps))

    def side(kind: str) -> dict:
        done = runs[kind]
        tokens = sum(r["train_tokens"] for r in done)
        seconds = sum(r["step_seconds"] for r in done)
        mfus = [r["mfu"] for r in done if r["mfu"] is not None]
        return {
            "tokens_per_second": tokens / seconds,
            "tokens_per_second_each": [round(r["tokens_per_second"], 1) for r in done],
            "computed_tokens_per_second": sum(r["computed_tokens"] for r in done) / seconds,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in done),
            "peak_cuda_mib": max((r.get("peak_cuda_mib", 0) for r in done), default=0) or None,
            "eval_loss": statistics.mean(r["eval_loss"] for r in done),
            "mfu": statistics.mean(mfus) if mfus else None,
        }

    reference, signoff = side("reference"), side("signoff")
    ratio = signoff["tokens_per_second"] / reference["tokens_per_second"]
    loss_ok = signoff["eval_loss"] <= reference["eval_loss"]
    speed = verdict(ratio, TARGET_RATIO, lower_is_better=False)
    print(
        f"\nSignoff {signoff['tokens_per_second']:.1f} tokens/s vs reference "
        f"{reference['tokens_per_second']:.1f}: {ratio:.2f}x (target >= {TARGET_RATIO}x): {speed}"
    )
    print(
        f"eval loss Signoff {signoff['eval_loss']:.4f} vs reference "
        f"{reference['eval_loss']:.4f}: {'equal or better' if loss_ok else 'WORSE'}"
    )
    overall = speed if loss_ok else f"{speed}, but the eval loss is worse: MISSED"
    print(f"verdict: {overall}")
    write_result(
        "training-throughput",
        {
            "quick": options.quick,
            "steps": steps,
            "order": order,
            "train_examples": len(train),
            "eval_examples": len(evals),
            "hyperparameters": {k: v for k, v in DEFAULTS.items() if k != "max_steps"},
            "reference": reference,
            "signoff": signoff,
            "runs": runs,
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "eval_loss_equal_or_better": loss_ok,
            "verdict": overall,
        },
    )


# -- the recipe's quality against the bare base model (issue 5) --------------------------------


def recipe(options: argparse.Namespace) -> None:
    from training_app.training.evaluate import EvaluationArguments
    from training_app.training.evaluate import run as evaluate
    from training_app.training.trainer import TrainingArguments, TrainingHooks, run

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
        "tokens_per_second": round(result.train_tokens / max(result.step_seconds, 1e-9), 1),
        "eval_history": result.eval_history,
        "eval_minutes": round(comparison.seconds / 60, 2),
        "trained": comparison.candidate,
        "base": comparison.reference,
        "sample": comparison.samples[:2],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps each")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: 2 epochs)")
    parser.add_argument("--repeats", type=int, help="runs per side (default 1 quick, else 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--peak-tflops", type=float, help="the card's peak, for the MFU")
    parser.add_argument(
        "--model",
        default=str(
            Path(os.environ.get("SIGNOFF_VAR_DIR", ROOT / "var"))
            / "models"
            / "smollm2-135m-instruct"
        ),
    )
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "bench-training"))
    parser.add_argument("--outputs", type=int, default=300, help="demo questions (1 in 10 eval)")
    parser.add_argument("--recipe", action="store_true", help="train + evaluate vs the base")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["num_epochs"], help="--recipe")
    parser.add_argument("--samples", type=int, default=8, help="--recipe: generations")
    parser.add_argument("--child", choices=["reference", "signoff"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if not (Path(options.model) / "config.json").is_file():
        raise SystemExit(
            f"{options.model} is missing: run `manage.py prepare_base_model` (or pass --model)"
        )
    if options.child:
        child(options)
    elif options.recipe:
        recipe(options)
    else:
        compare(options)


if __name__ == "__main__":
    main()
