"""Issue 22, part 1: how the default recipe does with few corrections.

Trains SmolLM2-135M-Instruct on the demo's corrected answers subsampled to 40, 80, 160 and
320 examples (nested subsets per seed: the 40 are among the 80, ...), each with the schedule
`training_app.training.recipe.fit_to_data` picks for that size ("fitted"), and, for
comparison, with the fixed schedule used before it (`DEFAULTS`: 2 epochs of batch 8,
"fixed"). Every run is scored on the same held-out questions:

- held-out loss: the trainer's answer-token loss (`evaluate_loss`) of the kept adapter;
- exact match: the greedy answer equals the house-style answer word for word (lower-cased,
  punctuation ignored: `evaluate.normalise`). This is the loop reviewer's approve rule
  (bench/bench_loop.py), so it is the share of answers a reviewer would not correct;
- next-step accuracy: the greedy answer's "Next step: ..." sentence equals the house style's
  for that question (the demo's own facts: where to go in the app, what to do next);
- fact accuracy: every fact of the question's answer (the figures and app paths the demo's
  GUIDELINES name, e.g. "$500", "5 to 10 business days", "15 miles") appears in the answer;
- training wall time and CPU time (user + system of the training process, model load and the
  per-epoch evaluations included: what a run costs), and the load average around it.

The trainer's eval file (which picks the kept adapter) is a slice of the held-out questions as
large as a 10 % eval split would be (at least 8), as a dataset version would give it; all
held-out questions are scored after training, untimed.

    .venv/bin/python bench/bench_small_data.py                     # 4 sizes x 3 seeds + fixed
    .venv/bin/python bench/bench_small_data.py --seeds 1 --sizes 80 --fixed-sizes ""
    .venv/bin/python bench/bench_small_data.py --quick             # 40 and 80, one seed

Each training runs in its own child process; with SIGNOFF_TORCH_LOCK set (a file path) the
child holds that lock (flock) while it runs, so measurements never overlap other torch work.
No Django: it drives `training_app.training` directly, as the worker does.
"""

import argparse
import json
import os
import random
import re
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

from common import headline, torch_lock, write_result  # noqa: E402

from demo.data import demo_items  # noqa: E402
from training_app.training.data import write_jsonl  # noqa: E402
from training_app.training.evaluate import normalise  # noqa: E402
from training_app.training.hyperparameters import DEFAULTS, validate  # noqa: E402
from training_app.training.recipe import fit_to_data  # noqa: E402

SIZES = [40, 80, 160, 320]
HELD_OUT = 32
POOL_SEED = 7  # the demo's own seed: the corrections a seeded demo shows
HELD_OUT_SEED = 8  # other conversations from the same distribution
MAX_NEW_TOKENS = 100
TARGET_SHARE = 0.90  # of the 320-example accuracy, from 80 examples
TARGET_CPU_MINUTES = 3.0
RUNS_LOG = ROOT / "bench" / "results" / "small-data-runs.jsonl"
# The facts a careful reviewer checks (seed_demo's GUIDELINES), as they appear in the answers.
FACTS = [
    "$500",
    "5 to 10 business days",
    "15 miles",
    "1-800-555-0142",
    "1st to the 28th",
    "14-day",
    "within one business day",
    "two business days",
    "pro rata",
]
NEXT_STEP = re.compile(r"next step:(.*)$", re.IGNORECASE | re.DOTALL)


def example(payload: dict, right: str) -> dict:
    return {
        "example_id": payload["external_id"],
        "messages": [*payload["input"], {"role": "assistant", "content": right}],
        "weight": 1.0,
    }


def corrected_pool(size: int) -> list[dict]:
    """The demo's wrong answers with the reviewers' house-style corrections, in demo order."""
    pool = []
    for payload, right in demo_items(size * 6, seed=POOL_SEED):
        if payload["output"] != right:
            pool.append(example(payload, right))
        if len(pool) == size:
            return pool
    raise SystemExit(f"the demo data gave only {len(pool)} corrections")


def held_out(count: int, exclude: set[str]) -> list[dict]:
    rows = []
    for payload, right in demo_items(count * 3, seed=HELD_OUT_SEED):
        if payload["input"][-1]["content"] in exclude:
            continue
        rows.append(example(payload, right))
        if len(rows) == count:
            break
    return rows


def next_step(text: str) -> str:
    found = NEXT_STEP.search(text)
    return normalise(found.group(1)) if found else ""


def scores(answers: list[str], references: list[str]) -> dict:
    n = len(references)
    exact = sum(normalise(a) == normalise(r) for a, r in zip(answers, references, strict=True))
    step = sum(
        bool(next_step(r)) and next_step(a) == next_step(r)
        for a, r in zip(answers, references, strict=True)
    )
    facts_total = facts_right = 0
    for a, r in zip(answers, references, strict=True):
        for fact in FACTS:
            if fact in r:
                facts_total += 1
                facts_right += fact in a
    return {
        "exact_match": exact / n,
        "next_step_accuracy": step / n,
        "fact_accuracy": facts_right / facts_total if facts_total else None,
        "n": n,
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- one run, in a child process ----------------------------------------------------------------


def child(options: argparse.Namespace) -> None:
    import torch

    from training_app.training.data import encode_all, prompt_ids, read_jsonl
    from training_app.training.evaluate import generate
    from training_app.training.runtime import load_base_model, load_tokenizer
    from training_app.training.trainer import TrainingArguments, TrainingHooks, evaluate_loss, run

    out = Path(options.out)
    params = json.loads(options.params)
    for key in [k for k in params if k not in TrainingArguments.__dataclass_fields__]:
        params.pop(key)  # advice the trainer cannot take (see recipe.Recipe.advice)
    with torch_lock() as waited:
        load_before = load_average()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        result = run(
            TrainingArguments(
                base_model_path=options.model,
                train_file=str(out / "train.jsonl"),
                eval_file=str(out / "select.jsonl"),
                output_dir=str(out / "run"),
                resume=False,
                device="cpu",
                **params,
            ),
            TrainingHooks(),
        )
        wall = time.monotonic() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        load_after = load_average()
        # Scoring (untimed): the kept adapter on every held-out question.
        from peft import PeftModel

        tokenizer = load_tokenizer(options.model)
        base = load_base_model(options.model, device="cpu", dtype=torch.float32)
        model = PeftModel.from_pretrained(base, result.adapter_dir)
        rows = read_jsonl(out / "heldout.jsonl")
        examples, _ = encode_all(tokenizer, rows, params.get("max_length", 256))
        loss = evaluate_loss(
            model, examples, pad_id=int(tokenizer.pad_token_id), device="cpu", batch_size=8
        )
        answers = generate(
            model,
            tokenizer,
            [prompt_ids(tokenizer, r["messages"][:-1]) for r in rows],
            device="cpu",
            max_new_tokens=MAX_NEW_TOKENS,
            batch_size=8,
            hooks=TrainingHooks(),
        )
    references = [r["messages"][-1]["content"] for r in rows]
    figures = {
        "steps": result.steps,
        "epochs_done": result.epochs_done,
        "best_step": result.best_step,
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 1),
        "step_seconds": round(result.step_seconds, 1),
        "train_tokens": result.train_tokens,
        "heldout_loss": round(loss, 4),
        "lock_wait_s": round(waited, 1),
        "load_before": load_before,
        "load_after": load_after,
        "threads": torch.get_num_threads(),
        **scores(answers, references),
        "sample": {"expected": references[0], "answer": answers[0]},
    }
    print("RESULT " + json.dumps(figures))


def spawn(options, *, size: int, seed: int, mode: str, params: dict, pool, heldout) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"small-data-{size}-{seed}-") as work:
        out = Path(work)
        subset = random.Random(seed).sample(pool, len(pool))[:size]
        write_jsonl(out / "train.jsonl", subset)
        write_jsonl(out / "heldout.jsonl", heldout)
        write_jsonl(out / "select.jsonl", heldout[: max(8, size // 10)])
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--out",
            str(out),
            "--model",
            options.model,
            "--params",
            json.dumps(params),
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"the {mode} run at {size} examples (seed {seed}) failed")
    figures = json.loads(lines[-1].removeprefix("RESULT "))
    figures.update(size=size, seed=seed, mode=mode, params=params)
    # Each run as it finishes: a sweep stopped halfway keeps what it measured.
    RUNS_LOG.parent.mkdir(parents=True, exist_ok=True)
    with RUNS_LOG.open("a") as log:
        log.write(json.dumps(figures) + "\n")
    print(
        f"{mode:6} n={size:4} seed={seed}: {figures['steps']:3} steps, exact "
        f"{figures['exact_match']:.3f}, next step {figures['next_step_accuracy']:.3f}, facts "
        f"{figures['fact_accuracy']:.3f}, held-out loss {figures['heldout_loss']:.4f}, train "
        f"{figures['train_wall_s']:.0f} s wall / {figures['train_cpu_s']:.0f} s CPU, load "
        f"{figures['load_before']} -> {figures['load_after']}",
        flush=True,
    )
    return figures


def schedule(size: int, mode: str, tokens: int, overrides: dict | None = None) -> dict:
    overrides = overrides or {}
    clean = validate(overrides)
    if mode == "fixed":
        chosen = clean
    else:
        chosen = fit_to_data(
            clean, explicit=set(overrides), train_examples=size, train_tokens=tokens
        )
        chosen = {**chosen.hyperparameters, **chosen.advice}
    return {k: v for k, v in chosen.items() if v is not None or k == "max_steps"}


def summarize(runs: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """(table, headline rows, curve) over the runs: means per (schedule, size)."""
    table = []
    for mode in ("fitted", "fixed"):
        for size in sorted({r["size"] for r in runs if r["mode"] == mode}):
            group = [r for r in runs if r["mode"] == mode and r["size"] == size]
            row = {"mode": mode, "size": size, "seeds": len(group), "steps": group[0]["steps"]}
            for key in (
                "exact_match",
                "next_step_accuracy",
                "fact_accuracy",
                "heldout_loss",
                "train_wall_s",
                "train_cpu_s",
            ):
                row[key] = mean(group, key)
            row["exact_each"] = [r["exact_match"] for r in group]
            table.append(row)
    for row in table:
        print(
            f"{row['mode']:6} {row['size']:4} examples x{row['seeds']}: {row['steps']} steps, "
            f"exact {row['exact_match']}, next step {row['next_step_accuracy']}, facts "
            f"{row['fact_accuracy']}, loss {row['heldout_loss']}, {row['train_wall_s']} s wall, "
            f"{row['train_cpu_s']} s CPU"
        )
    fitted = {r["size"]: r for r in table if r["mode"] == "fitted"}
    rows = []
    if 80 in fitted and 320 in fitted and fitted[320]["exact_match"]:
        share = fitted[80]["exact_match"] / fitted[320]["exact_match"]
        rows.append(
            headline(
                "exact match, 80 vs 320 corrections (share)",
                round(share, 3),
                baseline=fitted[320]["exact_match"],
                target=TARGET_SHARE,
                lower_is_better=False,
            )
        )
    if 80 in fitted:
        rows.append(
            headline(
                "training 80 corrections, wall minutes (machine load in the JSON)",
                round(fitted[80]["train_wall_s"] / 60, 2),
                "min",
                target=TARGET_CPU_MINUTES,
            )
        )
        rows.append(
            headline(
                "training 80 corrections, CPU minutes (both cores)",
                round(fitted[80]["train_cpu_s"] / 60, 2),
                "min",
            )
        )
    curve = {
        "title": "Held-out accuracy against training examples (SmolLM2-135M, CPU)",
        "x": "corrected examples trained on",
        "y": "share of held-out questions",
        "xscale": "log",
        "series": {
            "exact match, fitted schedule": [
                [r["size"], r["exact_match"]] for r in table if r["mode"] == "fitted"
            ],
            "next step, fitted schedule": [
                [r["size"], r["next_step_accuracy"]] for r in table if r["mode"] == "fitted"
            ],
            "exact match, fixed 2 epochs x 8": [
                [r["size"], r["exact_match"]] for r in table if r["mode"] == "fixed"
            ],
        },
    }
    return table, rows, curve


def schedules_by_draw(runs: list[dict], size: int = 80) -> dict:
    """Exact match per draw (seed) at `size` for every schedule in the log, with the 320-
    correction reference: which schedule learns from a small set, draw by draw."""
    series: dict[str, list] = {}
    for mode in sorted({r["mode"] for r in runs if r["size"] == size}):
        group = [r for r in runs if r["mode"] == mode and r["size"] == size]
        label = f"{size}, {mode}"
        params = next((r["params"] for r in group if r.get("params")), None)
        if mode == "fitted" and params:  # what the recipe fitted when these ran
            label += f" (batch {params['batch_size']}, lr {params['learning_rate']:g})"
        series[label] = sorted({r["seed"]: r["exact_match"] for r in group}.items())
    reference = {
        r["seed"]: r["exact_match"] for r in runs if r["mode"] == "fitted" and r["size"] == 320
    }
    if reference:
        series["320, fitted"] = sorted(reference.items())
    return {
        "title": f"Held-out exact match from {size} corrections, draw by draw",
        "x": "draw of the corrections (seed)",
        "y": "exact match (32 held-out questions)",
        "series": series,
        "targets": {"0.9 x the 320-correction accuracy": 0.9},
    }


def mean(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.mean(values), 4) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--fixed-sizes", default="40,80", help="the old fixed schedule, too")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--pool",
        type=int,
        default=max(SIZES),
        help="corrections drawn from (each seed's subsets are nested draws of this pool: keep "
        "it when adding runs to a log)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="an explicit hyperparameter for the fitted runs (logged as their own schedule, "
        "left out of the summary), e.g. --set learning_rate=0.002",
    )
    parser.add_argument(
        "--first-seed", type=int, default=1, help="seeds run from here (adds seeds to a log)"
    )
    parser.add_argument("--quick", action="store_true", help="40 and 80 examples, one seed")
    parser.add_argument(
        "--model",
        default=str(
            Path(os.environ.get("SIGNOFF_VAR_DIR", ROOT / "var"))
            / "models"
            / "smollm2-135m-instruct"
        ),
    )
    parser.add_argument(
        "--smoke", action="store_true", help="8 examples, 1 step, 4 held-out: checks the script"
    )
    parser.add_argument(
        "--summarize",
        action="store_true",
        help=f"no training: the table and plot over every run in {RUNS_LOG.name}",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if not (Path(options.model) / "config.json").is_file():
        raise SystemExit(
            f"{options.model} is missing: run `manage.py prepare_base_model` (or pass --model)"
        )
    if options.child:
        child(options)
        return
    if options.summarize:
        runs = [json.loads(line) for line in RUNS_LOG.read_text().splitlines() if line.strip()]
        table, rows, curve = summarize(runs)
        path = write_result(
            "small-data", {"table": table, "runs": runs, "headline": rows, "curve": curve}
        )
        from plot import plot_curve, plot_result

        print(f"plot: {plot_result(path)}")
        print(f"plot: {plot_curve('small-data-draws', schedules_by_draw(runs))}")
        return
    overrides = {}
    for item in options.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=JSON")
        overrides[key.strip()] = json.loads(value)
    fitted_mode = "fitted" + "".join(f" {k}={v}" for k, v in sorted(overrides.items()))
    sizes = [40, 80] if options.quick else [int(s) for s in options.sizes.split(",") if s]
    fixed = [int(s) for s in options.fixed_sizes.split(",") if s]
    seeds = 1 if options.quick or options.smoke else options.seeds
    if options.smoke:
        sizes, fixed = [8], []
    pool = corrected_pool(max(sizes + fixed + [options.pool]))
    heldout = held_out(
        4 if options.smoke else HELD_OUT, {r["messages"][-2]["content"] for r in pool}
    )
    tokens_per_example = 150  # measured mean of the demo examples (prompt + answer)
    print(
        f"pool of {len(pool)} corrections, {len(heldout)} held-out questions; sizes {sizes}, "
        f"fixed schedule at {fixed}, {seeds} seed(s); load {load_average()}",
        flush=True,
    )
    started = time.monotonic()
    runs = []
    for seed in range(options.first_seed, options.first_seed + seeds):
        for size in sizes:
            params = schedule(size, "fitted", size * tokens_per_example, overrides)
            if options.smoke:
                params["max_steps"] = 1
            runs.append(
                spawn(
                    options,
                    size=size,
                    seed=seed,
                    mode=fitted_mode,
                    params=params,
                    pool=pool,
                    heldout=heldout,
                )
            )
        for size in fixed:
            params = schedule(size, "fixed", size * tokens_per_example)
            runs.append(
                spawn(
                    options,
                    size=size,
                    seed=seed,
                    mode="fixed",
                    params=params,
                    pool=pool,
                    heldout=heldout,
                )
            )
    table, rows, curve = summarize(runs)
    write_result(
        "small-data",
        {
            "sizes": sizes,
            "fixed_sizes": fixed,
            "seeds": seeds,
            "held_out": len(heldout),
            "max_new_tokens": MAX_NEW_TOKENS,
            "defaults": {k: v for k, v in DEFAULTS.items()},
            "table": table,
            "runs": runs,
            "seconds": round(time.monotonic() - started, 1),
            "headline": rows,
            "curve": curve,
        },
    )


if __name__ == "__main__":
    main()
