"""A warm worker does not re-hash unchanged base weights, and any write still gets caught."""

import json
import os
from pathlib import Path

import pytest

from training_app.errors import UnsafeBaseModel
from training_app.services import base_models


@pytest.fixture
def registered(tmp_path, personas):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(b"weights " * 1000)
    return base_models.base_model_register(user=personas["admin"], name="tiny", folder=folder)


@pytest.fixture
def hash_calls(monkeypatch):
    calls = []
    real = base_models.fingerprint

    def counting(folder):
        calls.append(folder)
        return real(folder)

    monkeypatch.setattr(base_models, "fingerprint", counting)
    base_models._VERIFIED.clear()
    return calls


@pytest.mark.django_db
def test_unchanged_weights_are_hashed_once_per_process(registered, hash_calls):
    base_models.base_model_verify(base_model=registered)
    base_models.base_model_verify(base_model=registered)
    assert len(hash_calls) == 1


@pytest.mark.django_db
def test_a_rewrite_that_keeps_size_and_mtime_is_still_refused(registered, hash_calls):
    base_models.base_model_verify(base_model=registered)
    weights = Path(registered.folder) / "model.safetensors"
    before = weights.stat()
    with weights.open("r+b") as f:  # same size, in place: same inode
        f.write(b"WEIGHTS ")
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back
    with pytest.raises(UnsafeBaseModel, match="changed on disk"):
        base_models.base_model_verify(base_model=registered)
    assert len(hash_calls) == 2


@pytest.mark.django_db
def test_a_pickled_file_added_later_is_refused_even_when_cached(registered, hash_calls):
    base_models.base_model_verify(base_model=registered)
    (Path(registered.folder) / "extra.bin").write_bytes(b"")
    with pytest.raises(UnsafeBaseModel, match="pickled"):
        base_models.base_model_verify(base_model=registered)
