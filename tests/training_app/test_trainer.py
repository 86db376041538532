"""The trainer alone: no Django, a tiny model built in seconds."""

import json
import math
import shutil

import pytest

from training_app.training import data
from training_app.training.base_model import UnsafeModelFolder, check_folder
from training_app.training.trainer import (
    TrainingArguments,
    TrainingCancelled,
    TrainingFailed,
    TrainingHooks,
    is_out_of_memory,
    load_tokenizer,
    run,
)

from .conftest import demo_rows


def args_for(model_dir, splits, out, **overrides) -> TrainingArguments:
    train, evals = splits
    values = dict(
        base_model_path=str(model_dir),
        train_file=str(train),
        eval_file=str(evals),
        output_dir=str(out),
        num_epochs=2,
        batch_size=4,
        checkpoint_every_steps=3,
        lora_r=4,
        lora_alpha=8,
        device="cpu",
    )
    values.update(overrides)
    return TrainingArguments(**values)


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_it_puts_the_loss_on_the_assistant_answer_only(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    row = demo_rows(1)[0]
    example, truncated = data.encode(tokenizer, row, max_length=512)
    assert not truncated
    answer_ids = [t for t in example.labels if t != data.IGNORE_INDEX]
    text = tokenizer.decode(answer_ids)
    assert text.startswith(row["messages"][-1]["content"])
    assert "<|im_start|>" not in text  # no prompt token is trained on
    prompt_len = example.labels.index(answer_ids[0])
    assert "Harbor Mutual" in tokenizer.decode(example.input_ids[:prompt_len])


def test_it_keeps_the_answer_when_truncating_a_long_prompt(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    row = demo_rows(1)[0]
    row["messages"][1]["content"] = "word " * 400
    example, truncated = data.encode(tokenizer, row, max_length=96)
    assert truncated and len(example.input_ids) <= 96
    assert example.target_tokens > 10


def test_it_groups_batches_by_length_and_covers_every_example_once():
    lengths = [(i * 37) % 101 + 5 for i in range(200)]
    batches = data.length_grouped_batches(lengths, 8, seed=1, epoch=0)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(200))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded / sum(lengths) < 1.1  # under 10 % of the compute goes to padding
    assert batches == data.length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert batches != data.length_grouped_batches(lengths, 8, seed=1, epoch=1)


def lora_on(model_dir):
    """The tiny model with a LoRA adapter whose B is not zero, so every adapter weight has a
    gradient; in eval mode, so dropout does not make two passes differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    config.init_lora_weights = False
    return get_peft_model(base, config).eval()


def lora_gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("share_prefix", "row_tokens"), [(True, 1024), (False, 1024), (True, 250), (False, 250)]
)
def test_packed_rows_give_the_losses_and_gradients_of_padded_batches(
    tiny_model_dir, share_prefix, row_tokens
):
    """Each packed example sees only itself (and the shared prefix, which it had anyway):
    losses and adapter gradients match the padded batch, whether the batch fits one row or
    is spread over several padded rows."""
    import torch

    from training_app.training.trainer import packed_token_losses, token_losses

    tokenizer = load_tokenizer(str(tiny_model_dir))
    examples, _ = data.encode_all(tokenizer, demo_rows(5), max_length=256)
    examples[1].weight = 2.0
    pad = int(tokenizer.pad_token_id)
    model = lora_on(tiny_model_dir)

    padded = data.collate(examples, pad)
    sums, counts = token_losses(model, padded, "cpu")
    denominator = float((counts * padded["weights"]).sum())
    ((sums * padded["weights"]).sum() / denominator).backward()
    expected = lora_gradients(model)
    model.zero_grad()

    packed = data.pack(examples, pad, share_prefix=share_prefix, row_tokens=row_tokens)
    assert packed["prefix"] > 20 if share_prefix else packed["prefix"] == 0
    rows = packed["input_ids"].shape[0]
    assert rows == 1 if row_tokens == 1024 else 1 < rows < len(examples) + share_prefix
    assert packed["example_tokens"] == sum(len(e.input_ids) for e in examples)
    assert packed["processed_tokens"] == packed["example_tokens"] - (
        packed["prefix"] * (len(examples) - rows)
    )
    losses = packed_token_losses(model, packed, "cpu")
    assert losses.shape[0] == int(counts.sum())
    assert float(packed["weights"].sum()) == pytest.approx(denominator)
    assert float(losses.sum()) == pytest.approx(float(sums.sum()), rel=1e-5)
    ((losses * packed["weights"]).sum() / denominator).backward()
    got = lora_gradients(model)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert float(grad.abs().max()) > 0
        assert torch.allclose(got[name], grad, rtol=1e-4, atol=1e-6), name


def test_the_shared_prefix_stops_before_the_first_answer(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    row = demo_rows(1)[0]
    twins, _ = data.encode_all(tokenizer, [row, row], max_length=256)
    packed = data.pack(twins, int(tokenizer.pad_token_id))
    first_answer = next(i for i, label in enumerate(twins[0].labels) if label >= 0)
    assert packed["prefix"] == first_answer - 1  # each copy still predicts its own answer
    assert int(packed["keep"].sum()) == 2 * twins[0].target_tokens


def test_it_trains_evaluates_every_epoch_and_saves_a_safetensors_adapter(
    tiny_model_dir, jsonl_splits, tmp_path
):
    seen = []

    class Hooks(TrainingHooks):
        def on_progress(self, p):
            seen.append(p)

    result = run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "out"), Hooks())
    assert result.steps == result.total_steps == 8
    assert [e["epoch"] for e in result.eval_history] == [0, 1]
    assert result.best_eval_loss == min(e["eval_loss"] for e in result.eval_history)
    adapter = tmp_path / "out" / "adapter"
    assert {p.name for p in adapter.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    assert not [p for p in adapter.iterdir() if p.suffix in {".bin", ".pt"}]
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    assert [p.step for p in seen] == list(range(1, 9))
    assert all(p.tokens_per_second > 0 and p.learning_rate >= 0 for p in seen)
    assert seen[-1].eta_seconds == 0
    # Checkpoints carry the optimizer, scheduler and RNG states; only the last two are kept.
    checkpoints = sorted((tmp_path / "out" / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-000006", "step-000008"]
    assert {p.name for p in checkpoints[-1].iterdir()} >= {
        "adapter",
        "optimizer.pt",
        "scheduler.pt",
        "rng.pt",
        "trainer_state.json",
    }


@pytest.mark.parametrize("packing", ["flatten", "none"])
def test_it_trains_with_every_packing_mode(tiny_model_dir, jsonl_splits, tmp_path, packing):
    result = run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "out", packing=packing))
    assert result.steps == 8 and math.isfinite(result.best_eval_loss)
    assert result.computed_tokens == result.train_tokens  # nothing shared, no padding counted
    assert 0 < result.step_seconds < result.seconds


def test_sharing_the_prompt_prefix_computes_fewer_tokens(tiny_model_dir, jsonl_splits, tmp_path):
    result = run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "out"))
    assert 0 < result.computed_tokens < 0.9 * result.train_tokens


def test_it_refuses_an_unknown_packing_mode(tiny_model_dir, jsonl_splits, tmp_path):
    from training_app.training.hyperparameters import HyperparameterError, validate

    with pytest.raises(HyperparameterError, match="packing"):
        validate({"packing": "tight"})
    assert validate({})["packing"] == "shared_prefix"
    with pytest.raises(TrainingFailed, match="packing"):
        run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "out", packing="tight"))


class Crash(Exception):
    pass


def test_it_resumes_after_a_crash_with_the_same_result_as_an_uninterrupted_run(
    tiny_model_dir, jsonl_splits, tmp_path
):
    whole = run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "whole"))

    class CrashAtStep5(TrainingHooks):
        def on_progress(self, p):
            if p.step == 5:
                raise Crash()

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        run(args_for(tiny_model_dir, jsonl_splits, crashed), CrashAtStep5())
    resumed = run(args_for(tiny_model_dir, jsonl_splits, crashed))
    assert resumed.resumed_from_step == 4  # the epoch-end checkpoint (4 steps per epoch)
    assert resumed.steps == whole.steps
    assert resumed.best_eval_loss == pytest.approx(whole.best_eval_loss, rel=1e-5)
    a, b = adapter_tensors(tmp_path / "whole" / "adapter"), adapter_tensors(crashed / "adapter")
    assert a.keys() == b.keys()
    assert all((a[k] - b[k]).abs().max() < 1e-5 for k in a)


def test_it_resumes_from_a_mid_epoch_checkpoint(tiny_model_dir, jsonl_splits, tmp_path):
    splits = jsonl_splits
    whole = run(
        args_for(
            tiny_model_dir,
            splits,
            tmp_path / "whole",
            num_epochs=1,
            batch_size=2,
            checkpoint_every_steps=3,
        )
    )

    class CrashAtStep5(TrainingHooks):
        def on_progress(self, p):
            if p.step == 5:
                raise Crash()

    out = tmp_path / "crashed"
    with pytest.raises(Crash):
        run(
            args_for(
                tiny_model_dir, splits, out, num_epochs=1, batch_size=2, checkpoint_every_steps=3
            ),
            CrashAtStep5(),
        )
    resumed = run(
        args_for(tiny_model_dir, splits, out, num_epochs=1, batch_size=2, checkpoint_every_steps=3)
    )
    assert resumed.resumed_from_step == 3
    a, b = adapter_tensors(tmp_path / "whole" / "adapter"), adapter_tensors(out / "adapter")
    assert all((a[k] - b[k]).abs().max() < 1e-5 for k in a)
    assert resumed.best_eval_loss == pytest.approx(whole.best_eval_loss, rel=1e-5)


def test_it_evaluates_every_n_steps_and_keeps_the_best_adapter(
    tiny_model_dir, jsonl_splits, tmp_path, monkeypatch
):
    from training_app.training import trainer

    # Scripted eval losses (steps 3, 4, 6, 8): the best is mid-epoch, at step 6.
    losses = iter([1.0, 2.0, 0.5, 3.0])
    monkeypatch.setattr(trainer, "evaluate_sums", lambda *a, **k: (next(losses), 1.0))
    seen = []

    class Hooks(TrainingHooks):
        def on_eval(self, *, step, epoch, eval_loss):
            seen.append((step, epoch, eval_loss))

    out = tmp_path / "out"
    # 16 examples, batch 4: 4 steps an epoch, 8 in all; a checkpoint every 3 steps, kept.
    result = run(
        args_for(tiny_model_dir, jsonl_splits, out, eval_every_steps=3, keep_checkpoints=10),
        Hooks(),
    )
    # Every 3 steps and at each epoch end; the epoch's last step is evaluated once.
    assert seen == [(3, 0, 1.0), (4, 0, 2.0), (6, 1, 0.5), (8, 1, 3.0)]
    assert [(e["step"], e["eval_loss"]) for e in result.eval_history] == [
        (3, 1.0),
        (4, 2.0),
        (6, 0.5),
        (8, 3.0),
    ]
    assert (result.best_step, result.best_eval_loss) == (6, 0.5)
    best = adapter_tensors(out / "checkpoints" / "step-000006" / "adapter")
    final = adapter_tensors(out / "adapter")
    assert all(bool((best[k] == final[k]).all()) for k in best)
    last = adapter_tensors(out / "checkpoints" / "step-000008" / "adapter")
    assert any(bool((last[k] != final[k]).any()) for k in last)


def test_step_evaluations_resume_to_the_result_of_an_uninterrupted_run(
    tiny_model_dir, jsonl_splits, tmp_path
):
    whole = run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "whole", eval_every_steps=3))

    class CrashAtStep5(TrainingHooks):
        def on_progress(self, p):
            assert p.steps_per_epoch == 4
            if p.step == 5:
                raise Crash()

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        run(args_for(tiny_model_dir, jsonl_splits, crashed, eval_every_steps=3), CrashAtStep5())
    resumed = run(args_for(tiny_model_dir, jsonl_splits, crashed, eval_every_steps=3))
    assert resumed.resumed_from_step == 4
    # The evaluation at step 3 came back with the checkpoint; 6 and 8 were run again.
    assert [e["step"] for e in resumed.eval_history] == [3, 4, 6, 8]
    for a, b in zip(whole.eval_history, resumed.eval_history, strict=True):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)
    assert resumed.best_step == whole.best_step
    a, b = adapter_tensors(tmp_path / "whole" / "adapter"), adapter_tensors(crashed / "adapter")
    assert all((a[k] - b[k]).abs().max() < 1e-5 for k in a)


def test_it_stops_within_one_step_when_cancelled(tiny_model_dir, jsonl_splits, tmp_path):
    steps = []

    class CancelAfter2(TrainingHooks):
        def should_stop(self):
            return len(steps) >= 2

        def on_progress(self, p):
            steps.append(p.step)

    with pytest.raises(TrainingCancelled):
        run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "out"), CancelAfter2())
    assert steps == [1, 2]


def test_it_fails_on_a_nan_loss_with_the_reason(nan_model_dir, jsonl_splits, tmp_path):
    with pytest.raises(TrainingFailed, match="loss is nan at step 1"):
        run(args_for(nan_model_dir, jsonl_splits, tmp_path / "out"))
    assert not (tmp_path / "out" / "adapter").exists()


def test_it_recognises_out_of_memory_errors():
    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: 9 GB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_it_refuses_pickled_weights_and_remote_code(tiny_model_dir, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UnsafeModelFolder, match="pickled"):
        check_folder(pickled)
    remote = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeModelFolder, match="remote code"):
        check_folder(remote)
    with pytest.raises(UnsafeModelFolder):
        run(args_for(remote, (tmp_path / "x", None), tmp_path / "out"))


def test_generation_scores():
    from training_app.training.evaluate import generation_scores, rouge_l, token_f1

    assert token_f1("the cat sat", "the cat sat") == 1.0
    assert token_f1("a b", "c d") == 0.0
    assert rouge_l("a b c d", "a c d") == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1))
    scores = generation_scores([("Next step: call us.", "next step: call us"), ("x", "y z")])
    assert scores["exact_match"] == 0.5
    assert scores["length_ratio"] == pytest.approx((4 / 4 + 1 / 2) / 2)


def test_it_evaluates_a_candidate_against_the_base(tiny_model_dir, jsonl_splits, tmp_path):
    from training_app.training.evaluate import EvaluationArguments
    from training_app.training.evaluate import run as evaluate

    run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "out", num_epochs=1))
    result = evaluate(
        EvaluationArguments(
            base_model_path=str(tiny_model_dir),
            candidate_adapter_path=str(tmp_path / "out" / "adapter"),
            eval_file=str(jsonl_splits[1]),
            generation_samples=2,
            max_new_tokens=4,
            device="cpu",
        )
    )
    for side in (result.candidate, result.reference):
        assert math.isfinite(side["eval_loss"]) and side["perplexity"] > 1
        assert set(side) >= {"exact_match", "token_f1", "rouge_l", "length_ratio"}
    assert result.candidate["eval_loss"] != result.reference["eval_loss"]
    assert len(result.samples) == 2 and result.samples[0]["expected"]


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_it_accepts_any_local_safetensors_causal_lm(tmp_path, family):
    """Not only Llama: any causal LM transformers implements itself loads from a local
    safetensors folder (Qwen- and Mistral-style configs here, tiny and built locally)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from training_app.training.runtime import load_base_model

    config_class, model_class = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
    }[family]
    config = config_class(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    folder = tmp_path / family
    model_class(config).save_pretrained(str(folder))
    assert [p.name for p in check_folder(folder)] == ["model.safetensors"]
    model = load_base_model(str(folder), device="cpu", dtype=torch.float32)
    assert type(model).__name__ == model_class.__name__
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 256)


def test_it_refuses_remote_code_anywhere_and_models_that_are_not_causal_lms(
    tiny_model_dir, tmp_path
):
    folder = tmp_path / "tokenizer-code"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.Evil", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    with pytest.raises(UnsafeModelFolder, match=r"remote code .*tokenizer_config\.json"):
        check_folder(folder)
    trusting = tmp_path / "trusting"
    shutil.copytree(tiny_model_dir, trusting)
    config = json.loads((trusting / "config.json").read_text())
    (trusting / "config.json").write_text(json.dumps({**config, "trust_remote_code": True}))
    with pytest.raises(UnsafeModelFolder, match="remote code"):
        check_folder(trusting)
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_model_dir, encoder)
    (encoder / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    with pytest.raises(UnsafeModelFolder, match="not a causal language model"):
        check_folder(encoder)
