"""Model-version lifecycle: one transition function for the whole state machine."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit_append
from core.lifecycle import transition
from training_app.errors import ArtifactTampered, TransitionRefused
from training_app.models import ModelVersion
from training_app.training.base_model import PICKLED_SUFFIXES, sha256_file

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def model_version_transition(
    *,
    version: ModelVersion,
    to: str,
    actor: AbstractBaseUser | None,
    payload: dict[str, Any] | None = None,
    **fields: Any,
) -> ModelVersion:
    """Move `version` to `to` if the table allows it, as a compare-and-set, with an audit event.

    Must run inside the caller's transaction. Raises TransitionRefused when the move is not in
    the table or someone changed the status first."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("model_version_transition runs inside the caller's transaction")
    return transition(
        version,
        to,
        refused=lambda frm, to: TransitionRefused(
            f"Model version {version.name} cannot go from {frm} to {to}."
        ),
        changed=lambda frm: TransitionRefused(
            f"Model version {version.name} changed under us (was {frm})."
        ),
        fields=fields,
        audit=audit_append,
        audit_as="model_version",
        actor=actor,
        payload=payload,
    )


def adapter_manifest(folder: Path) -> dict[str, str]:
    return {path.name: sha256_file(path) for path in sorted(folder.iterdir()) if path.is_file()}


def model_version_store_adapter(
    *, version: ModelVersion, adapter_dir: str | Path
) -> tuple[str, dict]:
    """Copy the adapter into the version's own folder and fingerprint it.

    peft writes the base model's absolute local path into adapter_config.json; the copy names
    the registered base model instead (Signoff keeps the full reference on the version), so the
    artifact means the same thing on any machine. Files only: no transaction here."""
    source = Path(adapter_dir)
    target = Path(settings.SIGNOFF_TRAINING["MODELS_DIR"]) / "versions" / str(version.pk)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ADAPTER_FILES:
        if not (source / name).is_file():
            raise FileNotFoundError(f"{source / name} is missing")
    shutil.copyfile(source / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
    config = json.loads((source / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = version.base_model.name
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return str(target), adapter_manifest(target)


def manifest_digest(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def model_version_loadable_adapter(*, version: ModelVersion, into: Path) -> Path:
    """A copy of the version's adapter whose config points at the local base folder, checked
    against the manifest first (a tampered artifact never loads)."""
    source = Path(version.artifact_dir)
    if adapter_manifest(source) != version.manifest:
        raise TransitionRefused(f"The adapter files of {version.name} do not match its manifest.")
    into.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "adapter_model.safetensors", into / "adapter_model.safetensors")
    config = json.loads((source / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = version.base_model.folder
    (into / "adapter_config.json").write_text(json.dumps(config))
    return into


def artifact_verify(*, version: ModelVersion) -> str:
    """Hash the adapter files on disk; return the manifest digest, or raise ArtifactTampered."""
    folder = Path(version.artifact_dir) if version.artifact_dir else None
    if folder is None or not folder.is_dir() or not version.manifest:
        raise ArtifactTampered(f"{version.name} has no stored adapter to verify.")
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED_SUFFIXES)
    if pickled:
        raise ArtifactTampered(
            f"{version.name}'s folder holds pickled files ({', '.join(pickled)}): refused."
        )
    found = adapter_manifest(folder)
    if found != version.manifest:
        changed = sorted(
            name
            for name in set(found) | set(version.manifest)
            if found.get(name) != version.manifest.get(name)
        )
        raise ArtifactTampered(
            f"The adapter files of {version.name} do not match its SHA-256 manifest "
            f"({', '.join(changed)}).",
            extra={"files": changed},
        )
    return manifest_digest(version.manifest)
