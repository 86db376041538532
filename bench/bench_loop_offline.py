"""Issue 22, part 2, repeated: the loop's data path without its processes, for several draws
of questions, to put an interval on what one turn of N corrections buys.

`bench/bench_loop.py` measures one turn end to end (HTTP, workers, model server, sign-off) for
one draw of questions: N "before" questions (`demo_items(N, seed=B)`) and N "after" ones
(`seed=A`). Which scenarios a draw of 80 holds varies a lot (one draw has 2 "start a claim"
questions before and 13 after), so one draw says little about the next. This script repeats
what decides the after-rate, per (B, A) pair:

1. the examples one turn yields: the base version answers every before question wrongly
   (bench_loop measured 1.00), so the reviewer's rule makes each the house-style answer,
   corrected; approved answers would give the same text;
2. the dataset pipeline with the settings `make demo` builds with (`BuildSettings` defaults,
   `pii_allow` = the demo's PUBLIC_CONTACTS), train/eval split included;
3. training with the recipe fitted to the train split (`recipe.fit_to_data`), the eval split
   picking the kept adapter, as the worker does;
4. greedy answers to the after questions (max_new_tokens as bench_loop), judged by the same
   rule (`bench_loop.house_style_decision`): the after correction rate, with Wilson 95 %.

Answers are generated in batches of 8 (left-padded), where the model server answers one at a
time: a handful of answers may differ by float rounding. For (101, 202), bench_loop's draw,
the two agree within that (docs/benchmarks.md §7).

    .venv/bin/python bench/bench_loop_offline.py                       # N=80, 3 pairs
    .venv/bin/python bench/bench_loop_offline.py --n 40 --pairs 101:202

With SIGNOFF_TORCH_LOCK set (a file path) each pair's training and answering hold that lock.
"""

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import headline, torch_lock, write_result  # noqa: E402

TARGET_AFTER = 0.1
MAX_NEW_TOKENS = 80  # bench_loop's default


def scenario(right: str) -> str:
    """A short name for the scenario a house-style answer belongs to: its first words."""
    return " ".join(right.split()[:4])


def one_turn_examples(n: int, seed: int):
    """The dataset one turn yields, through the pipeline `make demo` builds with."""
    from datasets_app import pipeline
    from datasets_app.services.build_settings import BuildSettings
    from datasets_app.services.pipeline_run import run_pipeline
    from demo.data import PUBLIC_CONTACTS, demo_items

    items = [
        pipeline.Item(
            example_id=index,
            messages=[*payload["input"], {"role": "assistant", "content": right}],
            label="corrected",
            weight=1.0,
            source="channel:production",
            tags=list(payload["tags"]),
        )
        for index, (payload, right) in enumerate(demo_items(n, seed=seed))
    ]
    settings = BuildSettings.from_options({"pii_allow": list(PUBLIC_CONTACTS)})
    result = run_pipeline(items, settings)

    def rows(split):
        return [
            {"example_id": str(item.example_id), "messages": item.messages, "weight": item.weight}
            for item in result.items
            if item.split == split
        ]

    return rows("train"), rows("eval"), result.counts


def run_pair(options, before_seed: int, after_seed: int, work: Path) -> dict:
    import torch
    from bench_loop import house_style_decision
    from peft import PeftModel

    from demo.data import demo_items
    from monitoring.selectors import rate
    from training_app.training.data import prompt_ids, write_jsonl
    from training_app.training.evaluate import generate
    from training_app.training.hyperparameters import validate
    from training_app.training.recipe import fit_to_data
    from training_app.training.runtime import load_base_model, load_tokenizer
    from training_app.training.trainer import TrainingArguments, TrainingHooks, run

    train, evaluation, counts = one_turn_examples(options.n, before_seed)
    out = work / f"pair-{before_seed}-{after_seed}"
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", evaluation)
    recipe = fit_to_data(validate({}), explicit=set(), train_examples=len(train))
    params = {
        k: v
        for k, v in recipe.hyperparameters.items()
        if k in TrainingArguments.__dataclass_fields__
    }
    after = list(demo_items(options.n, seed=after_seed))
    with torch_lock():
        started = time.monotonic()
        result = run(
            TrainingArguments(
                base_model_path=options.model,
                train_file=str(out / "train.jsonl"),
                eval_file=str(out / "eval.jsonl"),
                output_dir=str(out / "run"),
                resume=False,
                device="cpu",
                **params,
            ),
            TrainingHooks(),
        )
        train_s = time.monotonic() - started
        tokenizer = load_tokenizer(options.model)
        base = load_base_model(options.model, device="cpu", dtype=torch.float32)
        model = PeftModel.from_pretrained(base, result.adapter_dir).eval()
        answers = generate(
            model,
            tokenizer,
            [prompt_ids(tokenizer, payload["input"]) for payload, _ in after],
            device="cpu",
            max_new_tokens=options.max_new_tokens,
            batch_size=8,
            hooks=TrainingHooks(),
        )
    corrected = collections.Counter()
    asked = collections.Counter(scenario(right) for _, right in after)
    taught = collections.Counter(scenario(row["messages"][-1]["content"]) for row in train)
    for (_, right), answer in zip(after, answers, strict=True):
        if house_style_decision(answer, right)["decision"] == "correct":
            corrected[scenario(right)] += 1
    count = sum(corrected.values())
    figures = {
        "before_seed": before_seed,
        "after_seed": after_seed,
        "train_examples": len(train),
        "eval_examples": len(evaluation),
        "steps": result.steps,
        "train_s": round(train_s, 1),
        "after": {"n": len(after), **rate(count, len(after))},
        "per_scenario": {
            name: {
                "taught": taught.get(name, 0),
                "asked": asked[name],
                "corrected": corrected[name],
            }
            for name in sorted(asked)
        },
        "pii_found": counts.get("pii", {}),
    }
    after_rate = figures["after"]
    print(
        f"pair {before_seed}:{after_seed}: {len(train)} train / {len(evaluation)} eval, "
        f"{result.steps} steps in {train_s:.0f} s; after correction rate "
        f"{after_rate['rate']:.3f} [{after_rate['ci_low']:.3f}, {after_rate['ci_high']:.3f}]",
        flush=True,
    )
    for name, row in figures["per_scenario"].items():
        if row["corrected"]:
            print(
                f"    {name:34} taught {row['taught']:2}, asked {row['asked']:2}, "
                f"corrected {row['corrected']:2}",
                flush=True,
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=80, help="questions before, and after")
    parser.add_argument(
        "--pairs",
        default="101:202,102:203,103:204",
        help="before:after seeds; 101:202 is bench_loop's draw",
    )
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument(
        "--model",
        default=str(
            Path(os.environ.get("SIGNOFF_VAR_DIR", ROOT / "var"))
            / "models"
            / "smollm2-135m-instruct"
        ),
    )
    options = parser.parse_args()
    pairs = []
    for text in options.pairs.split(","):
        before, sep, after = text.partition(":")
        if not sep or not before.strip().isdigit() or not after.strip().isdigit():
            raise SystemExit(f"--pairs: {text!r} is not BEFORE:AFTER (two seeds)")
        pairs.append((int(before), int(after)))
    if not Path(options.model, "config.json").is_file():
        raise SystemExit(f"no base model at {options.model}: run `manage.py prepare_base_model`")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    import django

    django.setup()

    from monitoring.selectors import rate

    with tempfile.TemporaryDirectory(prefix="loop-offline-") as work:
        runs = [run_pair(options, b, a, Path(work)) for b, a in pairs]
    count = sum(r["after"]["count"] for r in runs)
    total = sum(r["after"]["n"] for r in runs)
    pooled = rate(count, total)
    print(
        f"\npooled over {len(runs)} draws: after correction rate {pooled['rate']:.3f} "
        f"[{pooled['ci_low']:.3f}, {pooled['ci_high']:.3f}] ({count}/{total}); per draw "
        + ", ".join(f"{r['after']['rate']:.3f}" for r in runs)
    )
    write_result(
        "loop-offline",
        {
            "n": options.n,
            "max_new_tokens": options.max_new_tokens,
            "runs": runs,
            "pooled": {"n": total, **pooled},
            "headline": [
                headline(
                    f"after correction rate, one turn of {options.n}, pooled over "
                    f"{len(runs)} draws",
                    round(pooled["rate"], 3),
                    target=TARGET_AFTER,
                )
            ],
        },
    )


if __name__ == "__main__":
    main()
