"""Defaults that fit the data: the schedule a run gets when its launcher left it at default.

Plain Python (no torch, no Django), like `hyperparameters.py`: the web process calls it before
a run is created (and to show the launch page's estimate), the bench calls it to measure it.

Why a fixed "2 epochs of batch 8" is wrong at both ends: the model learns from optimizer
*updates*, and an epoch of 40 examples is 5 of them. On the demo data (docs/training.md,
"Defaults that fit the data", and docs/benchmarks.md) 42 updates of 8 left the house style
unlearned (exact match 0.0 on held-out questions) where 84 learned it (0.875); 2 epochs of 80
corrections are only 20 updates. At the other end, 2 epochs of 50,000 examples are 12,500
updates: hours of work past the point where the eval loss stopped falling.

The rule, applied only to the fields the launcher did not set (explicit values always win, and
what is derived from an explicit value, such as steps per epoch from an explicit batch size,
follows it):

1. Batch size: below `SMALL_EXAMPLES` training examples, 4 instead of 8; below `FEW_EXAMPLES`,
   2, with the learning rate `FEW_LEARNING_RATE` instead of the default. The same passes over
   the data then make more updates, which is what a small set lacks; the tokens computed, hence
   the time, stay about the same. (Measured on draws of 80 corrections: batch 4 at 1e-3 gave a
   mean exact match of 0.81, batch 2 at 2e-3 over the same examples trained on a higher one,
   docs/benchmarks.md §7.)
2. Steps: at least `MIN_UPDATES` optimizer steps of batch 4 (twice as many of batch 2: the same
   examples trained on), as many whole epochs as that takes (at most
   `MAX_EPOCHS`), stopping at exactly `MIN_UPDATES` (`max_steps`) when the last epoch would
   overshoot, so the learning rate decays to zero where training ends. Above that, 2 epochs
   (the measured default), or 1 once the data holds more than `LARGE_TOKENS` tokens or
   `LARGE_EXAMPLES` examples; and never more than `MAX_TOKEN_PASSES` tokens trained on in
   all (`max_steps` again).
3. Warmup: 5 % of the steps, at least `MIN_WARMUP_STEPS` and at most `MAX_WARMUP_STEPS`
   (linear warmup then linear decay, the trainer's schedule).
4. Evaluation: the trainer evaluates at each epoch end and keeps the best adapter. A run of
   fewer than `MIN_EVALS` epochs gets `eval_every_steps` so the best is picked from at least
   `MIN_EVALS` evaluations, unless that would evaluate more often than every
   `MIN_EVAL_EVERY` steps: in a run that short the eval loss moves less between two
   evaluations than its noise, and each one costs a pass over the eval split.
5. Checkpoints: every `CHECKPOINT_TOKENS` tokens of work (about 5 minutes on 2 CPU cores), at
   least every `MAX_CHECKPOINT_STEPS` and at most every `MIN_CHECKPOINT_STEPS` steps: a lost
   worker redoes a few minutes, and a short run does not spend its time saving.

Tokens are the examples' tokens (prompt and answer); when the caller has no tokenizer at hand
(the web process), `estimate_tokens(chars)` from the examples' characters is close enough
for these thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .hyperparameters import DEFAULTS

SMALL_EXAMPLES = 256  # below: batch 4 (more updates per pass)
SMALL_BATCH_SIZE = 4
MIN_UPDATES = 72  # of batch 4; measured: 42 updates too few, 84 enough (docs/training.md)
# Below FEW_EXAMPLES: batch 2 (twice the updates for the same examples trained on, hence about
# the same time) and a higher learning rate; measured on six draws of 80 corrections
# (docs/benchmarks.md §7).
FEW_EXAMPLES = 128
FEW_BATCH_SIZE = 2
FEW_LEARNING_RATE = 2e-3
DEFAULT_EPOCHS = 2
MAX_EPOCHS = 16
LARGE_EXAMPLES = 5_000  # above (or above LARGE_TOKENS): one epoch
LARGE_TOKENS = 1_000_000
MAX_TOKEN_PASSES = 4_000_000  # tokens trained on, in all, at most
WARMUP_RATIO = 0.05
MIN_WARMUP_STEPS = 2
MAX_WARMUP_STEPS = 100
MIN_EVALS = 4
MIN_EVAL_EVERY = 5  # steps between two evaluations, at least
CHECKPOINT_TOKENS = 75_000  # ~5 min at ~250 tokens/s (2 CPU cores, SmolLM2-135M)
MIN_CHECKPOINT_STEPS = 10
MAX_CHECKPOINT_STEPS = 500
CHARS_PER_TOKEN = 4.0  # English chat text with a BPE tokenizer; used only for thresholds

# The fields this module may choose; any other field keeps the value it was given.
SCHEDULE_FIELDS = (
    "learning_rate",
    "batch_size",
    "num_epochs",
    "max_steps",
    "warmup_ratio",
    "checkpoint_every_steps",
    "eval_every_steps",
)


@dataclass(frozen=True)
class Recipe:
    """The complete hyperparameters with the schedule fitted to the data, and why."""

    hyperparameters: dict[str, Any]
    train_examples: int
    train_tokens: int | None
    steps_per_epoch: int
    total_steps: int
    chosen: dict[str, Any]  # the fields this recipe set (left at default by the launcher)
    reasons: list[str] = field(default_factory=list)
    explicit: list[str] = field(default_factory=list)  # the fields the launcher set, sorted
    # Chosen, but not hyperparameters the trainer takes (none today: kept for callers that
    # read it, such as bench/bench_small_data.py).
    advice: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a run keeps of its recipe (JSON): what was fitted, what was given, and why."""
        return {
            "fitted": dict(self.chosen),
            "explicit": list(self.explicit),
            "reasons": list(self.reasons),
            "train_examples": self.train_examples,
            "train_tokens": self.train_tokens,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
        }

    @property
    def example_passes(self) -> int:
        """Examples trained on, counting repeats."""
        hp = self.hyperparameters
        return min(
            self.train_examples * hp["num_epochs"],
            self.total_steps * hp["batch_size"] * hp["gradient_accumulation_steps"],
        )


def estimate_tokens(chars: int) -> int:
    return math.ceil(max(0, chars) / CHARS_PER_TOKEN)


def steps_per_epoch(train_examples: int, batch_size: int, gradient_accumulation_steps: int) -> int:
    """The trainer's count: batches of `batch_size`, `gradient_accumulation_steps` per step."""
    batches = math.ceil(max(0, train_examples) / max(1, batch_size))
    return math.ceil(batches / max(1, gradient_accumulation_steps))


def fit_to_data(
    hyperparameters: Mapping[str, Any],
    *,
    explicit: Collection[str],
    train_examples: int,
    train_tokens: int | None = None,
) -> Recipe:
    """`hyperparameters`: the complete, validated set (`hyperparameters.validate`); `explicit`:
    the fields the launcher gave (those are never changed); `train_examples`, `train_tokens`:
    the training split's size. See the module docstring for the rule."""
    hp = dict(hyperparameters)
    explicit = set(explicit)
    free = {name for name in SCHEDULE_FIELDS if name not in explicit}
    n = max(0, int(train_examples))
    tokens = None if train_tokens is None else max(0, int(train_tokens))
    chosen: dict[str, Any] = {}
    reasons: list[str] = []
    advice: dict[str, Any] = {}

    def choose(name: str, value: Any, why: str) -> None:
        if name not in free:
            return
        if name not in DEFAULTS:  # the trainer does not take it (yet): say it, do not send it
            advice[name] = value
            reasons.append(f"{why} (advice: the trainer has no {name})")
            return
        if hp.get(name) != value:
            chosen[name] = value
        hp[name] = value
        reasons.append(why)

    if n == 0:
        # Nothing to fit to (the trainer refuses an empty split): the values stay as given.
        return Recipe(
            hyperparameters=hp,
            train_examples=0,
            train_tokens=tokens,
            steps_per_epoch=0,
            total_steps=0,
            chosen={},
            reasons=["no training examples: nothing to fit the schedule to"],
            explicit=sorted(explicit),
        )
    min_updates = MIN_UPDATES
    if n < FEW_EXAMPLES and "batch_size" in free and hp["batch_size"] > FEW_BATCH_SIZE:
        choose(
            "batch_size",
            FEW_BATCH_SIZE,
            f"batch {FEW_BATCH_SIZE}: {n} examples (< {FEW_EXAMPLES}) learn more from twice the "
            f"updates of batch {SMALL_BATCH_SIZE} over the same examples",
        )
        # The same examples trained on as MIN_UPDATES of batch 4, so about the same time.
        min_updates = MIN_UPDATES * SMALL_BATCH_SIZE // FEW_BATCH_SIZE
        choose(
            "learning_rate",
            FEW_LEARNING_RATE,
            f"learning rate {FEW_LEARNING_RATE:g} (not {DEFAULTS['learning_rate']:g}): measured "
            "better on small sets at the same time",
        )
    elif n < SMALL_EXAMPLES and hp["batch_size"] > SMALL_BATCH_SIZE:
        choose(
            "batch_size",
            SMALL_BATCH_SIZE,
            f"batch {SMALL_BATCH_SIZE}: {n} examples (< {SMALL_EXAMPLES}) need more updates "
            "per pass",
        )
    accumulation = hp["gradient_accumulation_steps"]
    per_epoch = max(1, steps_per_epoch(n, hp["batch_size"], accumulation))
    examples_per_step = hp["batch_size"] * accumulation
    tokens_per_example = (tokens / n) if (tokens and n) else None

    # -- how long: epochs, and max_steps where the last epoch stops early -------------------
    large = n > LARGE_EXAMPLES or (tokens is not None and tokens > LARGE_TOKENS)
    epochs_wanted = 1 if large else DEFAULT_EPOCHS
    total = max(min_updates, epochs_wanted * per_epoch)
    total = min(total, MAX_EPOCHS * per_epoch)
    why_total = (
        f"{min_updates} updates at least ({per_epoch} per epoch)"
        if total > epochs_wanted * per_epoch
        else f"{epochs_wanted} epoch{'s' if epochs_wanted > 1 else ''} of {per_epoch} steps"
    )
    if total == MAX_EPOCHS * per_epoch and MAX_EPOCHS * per_epoch < min_updates:
        why_total = f"{MAX_EPOCHS} epochs at most (only {per_epoch} steps per epoch)"
    if tokens_per_example:
        cap = math.floor(MAX_TOKEN_PASSES / (tokens_per_example * examples_per_step))
        if cap < total:
            total = max(1, cap)
            why_total = f"{MAX_TOKEN_PASSES:,} tokens trained on at most"
    if "num_epochs" in explicit:
        epochs = int(hp["num_epochs"])
        total = epochs * per_epoch
    else:
        epochs = math.ceil(total / per_epoch)
        choose("num_epochs", epochs, why_total)
    if hp.get("max_steps") and "max_steps" in explicit:
        # The launcher's cap stands; warmup and cadences fit the steps that will run.
        total = min(total, int(hp["max_steps"]))
    else:
        stop_early = total < epochs * per_epoch
        choose(
            "max_steps",
            total if stop_early else None,
            f"stop at step {total}, inside epoch {epochs}" if stop_early else "whole epochs",
        )
    total = max(1, total)

    # -- schedule ---------------------------------------------------------------------------
    warmup = min(MAX_WARMUP_STEPS, max(MIN_WARMUP_STEPS, round(WARMUP_RATIO * total)))
    warmup = min(warmup, total // 2)
    # The trainer warms up for int(total * ratio) steps: half a step of margin keeps float
    # rounding from losing one.
    ratio = round(min(0.5, (warmup + 0.5) / total), 6) if warmup else 0.0
    choose("warmup_ratio", ratio, f"{warmup} warmup steps of {total}")

    # -- evaluation and checkpoint cadence --------------------------------------------------
    if epochs < MIN_EVALS:
        every = math.ceil(total / MIN_EVALS)
        ends = "the epoch end" if epochs == 1 else f"the {epochs} epoch ends"
        if every >= MIN_EVAL_EVERY:
            choose(
                "eval_every_steps",
                every,
                f"evaluate every {every} steps as well as at {ends}: the best adapter of "
                f"{MIN_EVALS} evaluations at least",
            )
        else:
            choose(
                "eval_every_steps",
                None,
                f"evaluate at {ends} only ({total} steps: too few to evaluate more often)",
            )
    per_step_tokens = (tokens_per_example or 150.0) * examples_per_step
    every = round(CHECKPOINT_TOKENS / per_step_tokens)
    every = min(MAX_CHECKPOINT_STEPS, max(MIN_CHECKPOINT_STEPS, every))
    choose(
        "checkpoint_every_steps",
        every,
        f"checkpoint every {every} steps (~{CHECKPOINT_TOKENS:,} tokens) and at epoch ends",
    )
    return Recipe(
        hyperparameters=hp,
        train_examples=n,
        train_tokens=tokens,
        steps_per_epoch=per_epoch,
        total_steps=total,
        chosen=chosen,
        reasons=reasons,
        explicit=sorted(explicit),
        advice=advice,
    )
