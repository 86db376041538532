"""Model artifacts that would run code when loaded are refused before anything loads: a pickled
`.bin` with a code-running payload, a config asking for remote code, an adapter whose checksum
does not match its manifest."""

import json
import pickle
from pathlib import Path

import pytest

from training_app.errors import ArtifactTampered, UnsafeBaseModel
from training_app.services.base_models import base_model_register
from training_app.services.versions import artifact_verify
from training_app.training.base_model import UnsafeModelFolder, check_folder


class Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def safe_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    return folder


def test_a_pickled_bin_with_a_payload_is_refused_unopened(tmp_path):
    folder = safe_folder(tmp_path / "base")
    marker = tmp_path / "marker"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UnsafeModelFolder, match="pickled"):
        check_folder(folder)
    assert not marker.exists()


@pytest.mark.django_db
def test_registering_such_a_folder_is_refused(tmp_path):
    folder = safe_folder(tmp_path / "base")
    marker = tmp_path / "marker"
    (folder / "weights.pt").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UnsafeBaseModel):
        base_model_register(user=None, name="evil", folder=folder)
    assert not marker.exists()


def test_a_config_asking_for_remote_code_is_refused(tmp_path):
    folder = safe_folder(tmp_path / "base")
    marker = tmp_path / "marker"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = {"architectures": ["Evil"], "auto_map": {"AutoModelForCausalLM": "modeling_evil.E"}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeModelFolder, match="remote code"):
        check_folder(folder)
    assert not marker.exists()


@pytest.mark.django_db
def test_an_adapter_whose_checksum_does_not_match_is_refused(world):
    version = world.approved
    assert artifact_verify(version=version)
    adapter = Path(version.artifact_dir) / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes() + b"tampered")
    with pytest.raises(ArtifactTampered, match=r"adapter_model\.safetensors"):
        artifact_verify(version=version)


@pytest.mark.django_db
def test_deploying_a_tampered_adapter_is_refused_and_nothing_goes_live(world, api):
    version = world.approved
    (Path(version.artifact_dir) / "adapter_config.json").write_text("{}")
    response = api(world.people["deployer"]).post(
        f"/api/channels/{world.channel.name}/deploy/",
        {"version": str(version.pk), "comment": "go"},
        format="json",
    )
    assert 400 <= response.status_code < 500
    world.channel.refresh_from_db()
    assert world.channel.live_version_id is None
