"""The schedule fitted to the data (training_app/training/recipe.py): plain Python, no torch."""

from pathlib import Path

import pytest

from training_app.training import recipe
from training_app.training.hyperparameters import DEFAULTS, validate
from training_app.training.recipe import MIN_UPDATES, fit_to_data, steps_per_epoch

pytestmark = pytest.mark.once


def fitted(n: int, values: dict | None = None, tokens: int | None = None):
    values = values or {}
    return fit_to_data(
        validate(values), explicit=set(values), train_examples=n, train_tokens=tokens
    )


def trainer_steps(hp: dict, n: int) -> int:
    """What the trainer will run: its own formula (trainer.run)."""
    total = steps_per_epoch(n, hp["batch_size"], hp["gradient_accumulation_steps"])
    total *= hp["num_epochs"]
    return min(total, hp["max_steps"]) if hp["max_steps"] else total


def test_it_gives_a_small_dataset_enough_updates():
    for n in (40, 80):
        r = fitted(n, tokens=n * 150)
        hp = r.hyperparameters
        assert hp["batch_size"] == recipe.FEW_BATCH_SIZE
        assert hp["learning_rate"] == recipe.FEW_LEARNING_RATE > DEFAULTS["learning_rate"]
        # Twice the updates of batch 4 over the same examples trained on: about the same time.
        assert r.total_steps == 2 * MIN_UPDATES == trainer_steps(hp, n)
        assert r.example_passes == MIN_UPDATES * recipe.SMALL_BATCH_SIZE
        # Stopping inside the last epoch: the schedule decays to zero where training ends.
        assert hp["max_steps"] == 2 * MIN_UPDATES < hp["num_epochs"] * r.steps_per_epoch
    for n in (128, 200):
        hp = fitted(n, tokens=n * 150).hyperparameters
        assert hp["batch_size"] == recipe.SMALL_BATCH_SIZE
        assert hp["learning_rate"] == DEFAULTS["learning_rate"]
    # The fixed default would have given 80 corrections 20 updates.
    assert steps_per_epoch(80, DEFAULTS["batch_size"], 1) * DEFAULTS["num_epochs"] == 20


def test_a_small_set_keeps_the_learning_rate_it_was_given_and_the_rate_follows_the_batch():
    r = fitted(80, {"learning_rate": 5e-4})
    assert r.hyperparameters["learning_rate"] == 5e-4
    assert r.hyperparameters["batch_size"] == recipe.FEW_BATCH_SIZE
    assert "learning_rate" not in r.chosen and "learning_rate" in r.explicit
    # An explicit batch size is not the measured pair: the default rate stays.
    r = fitted(80, {"batch_size": 4})
    assert r.hyperparameters["learning_rate"] == DEFAULTS["learning_rate"]
    assert r.total_steps == MIN_UPDATES


def test_it_keeps_two_epochs_where_they_are_already_enough():
    r = fitted(320, tokens=320 * 150)
    assert r.hyperparameters["batch_size"] == DEFAULTS["batch_size"]
    assert r.hyperparameters["num_epochs"] == 2 and r.hyperparameters["max_steps"] is None
    assert r.total_steps == 80 == trainer_steps(r.hyperparameters, 320)


def test_it_does_not_overtrain_a_large_dataset():
    many = fitted(20_000, tokens=20_000 * 150)
    assert many.hyperparameters["num_epochs"] == 1
    huge = fitted(200_000, tokens=200_000 * 150)
    hp = huge.hyperparameters
    tokens_per_step = 150 * hp["batch_size"]
    assert huge.total_steps * tokens_per_step <= recipe.MAX_TOKEN_PASSES
    assert hp["max_steps"] == huge.total_steps == trainer_steps(hp, 200_000)
    # Long examples reach the token cap with fewer examples.
    long = fitted(3_000, tokens=3_000 * 2_000)
    assert long.hyperparameters["num_epochs"] == 1 and long.total_steps < 375


def test_it_caps_epochs_on_a_tiny_dataset():
    r = fitted(6)
    assert r.hyperparameters["num_epochs"] == recipe.MAX_EPOCHS
    assert r.total_steps == recipe.MAX_EPOCHS * r.steps_per_epoch < MIN_UPDATES


@pytest.mark.parametrize("n", [1, 7, 40, 80, 160, 255, 256, 320, 999, 5_001, 50_000])
def test_the_trainer_runs_exactly_the_steps_the_recipe_counts(n):
    r = fitted(n, tokens=n * 150)
    assert r.total_steps == trainer_steps(r.hyperparameters, n)
    # Warmup as the trainer computes it: int(total * ratio) steps, never lost to rounding.
    warmup = int(r.total_steps * r.hyperparameters["warmup_ratio"])
    assert recipe.MIN_WARMUP_STEPS <= warmup <= recipe.MAX_WARMUP_STEPS or r.total_steps < 4
    assert validate(r.hyperparameters) == r.hyperparameters  # still within every limit


def test_explicit_values_always_win():
    values = {"num_epochs": 3, "batch_size": 8, "warmup_ratio": 0.1, "checkpoint_every_steps": 7}
    r = fitted(80, values)
    hp = r.hyperparameters
    assert {k: hp[k] for k in values} == values
    assert hp["max_steps"] is None and r.total_steps == 30 == trainer_steps(hp, 80)
    assert not set(values) & set(r.chosen)


def test_an_explicit_max_steps_stands_and_the_rest_fits_it():
    r = fitted(80, {"max_steps": 10})
    assert r.hyperparameters["max_steps"] == 10 and r.total_steps == 10
    assert r.hyperparameters["num_epochs"] * r.steps_per_epoch >= 10
    assert int(10 * r.hyperparameters["warmup_ratio"]) == recipe.MIN_WARMUP_STEPS


def test_an_explicit_batch_size_sets_the_steps_per_epoch():
    r = fitted(80, {"batch_size": 16})
    assert r.steps_per_epoch == 5
    assert r.total_steps == MIN_UPDATES == trainer_steps(r.hyperparameters, 80)


def test_it_checkpoints_by_work_done_and_says_why():
    short = fitted(80, tokens=80 * 150)
    assert short.hyperparameters["checkpoint_every_steps"] == 250  # ~75k tokens of batch 2
    long_examples = fitted(5_000, tokens=5_000 * 1_000)
    assert long_examples.hyperparameters["checkpoint_every_steps"] == recipe.MIN_CHECKPOINT_STEPS
    assert any("checkpoint" in reason for reason in short.reasons)
    assert short.chosen["batch_size"] == 2 and "num_epochs" in short.chosen


def test_a_run_of_few_epochs_is_also_evaluated_between_epoch_ends():
    r = fitted(320)  # 2 epochs of 40
    assert r.hyperparameters["eval_every_steps"] == r.chosen["eval_every_steps"] == 20
    assert not r.advice  # the trainer takes it
    assert fitted(80).hyperparameters["eval_every_steps"] is None  # 4 epoch ends already
    # One epoch of 8 steps: an evaluation every 2 steps would be noise; the epoch end only.
    short = fitted(32, {"num_epochs": 1, "batch_size": 4})
    assert short.total_steps == 8 and short.hyperparameters["eval_every_steps"] is None
    assert any("at the epoch end only" in reason for reason in short.reasons)
    assert fitted(320, {"eval_every_steps": 7}).hyperparameters["eval_every_steps"] == 7


def test_an_empty_split_keeps_the_values_given():
    r = fitted(0, {"num_epochs": 3})
    assert r.hyperparameters == validate({"num_epochs": 3})
    assert r.total_steps == 0 and not r.chosen and r.reasons
    assert r.explicit == ["num_epochs"]


def test_it_records_what_it_fitted_what_was_given_and_why():
    record = fitted(80, {"lora_r": 8}, tokens=12_000).record()
    assert record["fitted"]["batch_size"] == 2 and record["explicit"] == ["lora_r"]
    assert record["fitted"]["learning_rate"] == recipe.FEW_LEARNING_RATE
    assert record["total_steps"] == 2 * MIN_UPDATES and record["train_examples"] == 80
    assert record["reasons"] and record["train_tokens"] == 12_000
    import json

    assert json.loads(json.dumps(record)) == record  # stored in a JSON column as is


def test_it_leaves_fields_it_does_not_schedule_alone():
    r = fitted(80, tokens=12_000)
    for name in ("lora_r", "lora_alpha", "target_modules", "seed", "packing"):
        assert r.hyperparameters[name] == DEFAULTS[name]


def test_the_recipe_module_imports_neither_torch_nor_django():
    source = Path(recipe.__file__).read_text()
    assert "import torch" not in source and "django" not in source


def test_tokens_are_estimated_from_characters():
    assert recipe.estimate_tokens(0) == 0 and recipe.estimate_tokens(401) == 101
