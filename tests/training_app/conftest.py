"""A tiny Llama (2 layers, SmolLM2's tokenizer) built once per session, and dataset versions
made of demo answers."""

import hashlib
from pathlib import Path

import pytest
from django.utils import timezone

from demo.data import demo_outputs
from training_app.training.data import write_jsonl

REAL_MODEL = Path(__file__).resolve().parents[2] / "var" / "models" / "smollm2-135m-instruct"


def demo_rows(count: int, seed: int = 7) -> list[dict]:
    """Chat rows as `dataset_version_rows` yields them, from the demo traffic's right answers."""
    rows = []
    for output in demo_outputs(count, seed=seed):
        rows.append(
            {
                "example_id": output["external_id"],
                "messages": [*output["input"], {"role": "assistant", "content": output["output"]}],
                "weight": 1.0,
            }
        )
    return rows


def _tokenizer():
    from transformers import AutoTokenizer

    if (REAL_MODEL / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(REAL_MODEL))
    from training_app.training.base_model import gguf_path

    path = gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def build_tiny_model(folder: Path, *, nan: bool = False) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    if nan:
        with torch.no_grad():
            model.model.norm.weight[0] = float("nan")
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def nan_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("nan-llama"), nan=True)


@pytest.fixture
def jsonl_splits(tmp_path):
    rows = demo_rows(24)
    train, evals = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    write_jsonl(train, rows[:16])
    write_jsonl(evals, rows[16:])
    return train, evals


@pytest.fixture
def training_dirs(settings, tmp_path):
    settings.SIGNOFF_TRAINING = {
        **settings.SIGNOFF_TRAINING,
        "MODELS_DIR": tmp_path / "models",
        "RUNS_DIR": tmp_path / "runs",
        "PROGRESS_SECONDS": 0.0,
        "HEARTBEAT_SECONDS": 0.5,
        "EVAL_GENERATION_SAMPLES": 3,
        "EVAL_MAX_NEW_TOKENS": 6,
        "DEVICE": "cpu",
    }
    return tmp_path


@pytest.fixture
def make_dataset_version(make_user):
    """A ready dataset version with `train` and `eval` rows, written the way datasets_app's
    build leaves them (examples of resolved outputs, members with split and position)."""
    from datasets_app.models import DatasetVersion, DatasetVersionExample, Example
    from tests.factories import OutputFactory

    def make(train: int = 16, evals: int = 6, *, name: str = "harbor", status="ready"):
        owner = make_user(None)
        version = DatasetVersion.objects.create(
            name=name, status=status, created_by=owner, manifest_hash="0" * 64
        )
        rows = demo_rows(train + evals, seed=len(name) + train)
        for index, row in enumerate(rows):
            split = "train" if index < train else "eval"
            output = OutputFactory(
                input=row["messages"][:-1],
                output_text=row["messages"][-1]["content"],
                status="resolved",
                resolution="approved",
            )
            example = Example.objects.create(
                output=output,
                kind="positive",
                label="approved",
                resolved_by="single",
                messages=row["messages"],
                source=output.source,
                model_name=output.model_name,
                output_updated_at=timezone.now(),
            )
            DatasetVersionExample.objects.create(
                version=version,
                example=example,
                split=split,
                position=index if split == "train" else index - train,
                messages=row["messages"],
                weight=1.0,
                label="approved",
                content_hash=hashlib.sha256(repr(row["messages"]).encode()).hexdigest(),
            )
        return version

    return make


@pytest.fixture
def tiny_base_model(db, tiny_model_dir, settings):
    from training_app.services import base_model_register

    return base_model_register(
        user=None, name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"], folder=tiny_model_dir
    )
