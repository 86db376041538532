"""Versions with stored adapters, channels and finished comparisons, for governance tests."""

import json
from pathlib import Path

from governance.models import Channel
from governance.services import channel_save
from training_app.models import Evaluation, ModelVersion
from training_app.services import training_run_create
from training_app.services.versions import model_version_store_adapter


def write_adapter(folder: Path, base_dir: Path | None = None, seed: int = 0) -> Path:
    """A real LoRA adapter on the tiny model when `base_dir` is given, else stand-in files."""
    folder.mkdir(parents=True, exist_ok=True)
    if base_dir is None:
        (folder / "adapter_model.safetensors").write_bytes(b"weights-%d" % seed)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "seed": seed}))
        return folder
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_version(
    *,
    launcher,
    dataset,
    tmp_path: Path,
    status: str = "evaluated",
    name: str = "",
    base_dir: Path | None = None,
    seed: int = 0,
) -> ModelVersion:
    run = training_run_create(
        user=launcher,
        dataset_version=dataset,
        enqueue=False,
        hyperparameters={"num_epochs": 1},
        name=name,
    )
    version = ModelVersion.objects.select_related("base_model").get(run=run)
    adapter = write_adapter(tmp_path / f"adapter-{version.pk}", base_dir, seed)
    artifact_dir, manifest = model_version_store_adapter(version=version, adapter_dir=adapter)
    ModelVersion.objects.filter(pk=version.pk).update(
        status=status, artifact_dir=artifact_dir, manifest=manifest
    )
    version.refresh_from_db()
    return version


def make_channel(name: str = "production", **policy) -> Channel:
    return channel_save(
        user=None,
        name=name,
        policy=policy,
        regression_set=[
            {"prompt": "How long do claims take?", "reference": "5-10 business days."},
            {"prompt": "How far do you tow?", "reference": "Up to 15 miles."},
        ],
    )


def finished_evaluation_results(**candidate_metrics) -> dict:
    """What a worker records for a finished comparison: the reference scores the defaults, the
    candidate the defaults overridden by `candidate_metrics`."""
    live = {"eval_loss": 1.0, "perplexity": 2.7, "rouge_l": 0.5, "token_f1": 0.5}
    return {
        "metrics": {
            "candidate": {**live, **candidate_metrics},
            "reference": live,
            "examples": 2,
            "generated": 2,
        },
        "samples": [
            {
                "prompt": "How far do you tow?",
                "expected": "Up to 15 miles.",
                "candidate": "Up to 15 miles.",
                "reference": "Ten miles.",
                "candidate_rouge_l": 1.0,
                "reference_rouge_l": 0.0,
            }
        ],
    }


def finish_evaluations(request, **candidate_metrics) -> None:
    """Mark the request's comparisons done: the live version scores the defaults, the candidate
    the defaults overridden by `candidate_metrics`."""
    for evaluation in Evaluation.objects.filter(signoff_request=request):
        Evaluation.objects.filter(pk=evaluation.pk).update(
            status="done", **finished_evaluation_results(**candidate_metrics)
        )
