"""GPU-only checks: run where a CUDA device is present (the `gpu` marker), skipped elsewhere.

They train the tiny model in bf16 on the GPU and record its throughput, so a GPU worker box can
be checked with `pytest -m gpu tests/training_app/test_gpu.py -s`."""

import pytest

from training_app.training.trainer import run

from .test_trainer import args_for

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_it_trains_in_bf16_on_the_gpu_and_records_throughput(
    tiny_model_dir, jsonl_splits, tmp_path
):
    result = run(args_for(tiny_model_dir, jsonl_splits, tmp_path / "out", device="auto"))
    assert result.device == "cuda"
    assert "bfloat16" in result.dtype
    assert result.steps == result.total_steps > 0
    assert result.best_eval_loss is not None and result.best_eval_loss == result.best_eval_loss
    print(f"\nGPU {torch.cuda.get_device_name(0)}: {result.tokens_per_second:.0f} tokens/s")


def test_auto_picks_the_gpu_in_bf16():
    from training_app.training.trainer import resolve_device

    device, dtype = resolve_device("auto")
    assert device == "cuda" and dtype == torch.bfloat16
