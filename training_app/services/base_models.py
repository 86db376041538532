"""The base-model registry: local folders of safetensors weights, fingerprinted once."""

import json
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit_append
from training_app.errors import InvalidTrainingRequest, UnsafeBaseModel
from training_app.models import BaseModel
from training_app.training.base_model import UnsafeModelFolder, check_folder, fingerprint

# Per process: folder -> the stat signature of its weight files when their hashes last matched
# the registry. A warm worker then skips re-reading hundreds of MB before each run, while any
# write to a file still forces a full hash: ctime changes on every write or metadata change
# and, unlike mtime, cannot be set back by the writer.
_VERIFIED: dict[str, tuple] = {}


def _stat_signature(weights: list[Path]) -> tuple:
    signature = []
    for path in weights:
        st = path.stat()
        signature.append(
            (path.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        )
    return tuple(signature)


def base_model_register(
    *,
    user: AbstractBaseUser | None,
    name: str,
    folder: str | Path,
    hub_id: str = "",
    revision: str = "",
) -> BaseModel:
    """Register (or re-fingerprint) a local causal-LM folder.

    Refuses folders with pickled weights or remote code: loading either would run code from
    the folder. Hashing happens before the transaction (it reads hundreds of MB)."""
    path = Path(folder).resolve()
    try:
        hashes = fingerprint(path)
    except UnsafeModelFolder as exc:
        raise UnsafeBaseModel(str(exc), field="folder") from exc
    config = json.loads((path / "config.json").read_text())
    architecture = (config.get("architectures") or [""])[0]
    if not name or len(name) > 100:
        raise InvalidTrainingRequest("A base model needs a name.", field="name")
    with transaction.atomic():
        model, created = BaseModel.objects.select_for_update().get_or_create(
            name=name,
            defaults={
                "folder": str(path),
                "hub_id": hub_id,
                "revision": revision,
                "weight_sha256": hashes,
                "architecture": architecture,
                "created_by": user,
            },
        )
        if not created and (model.weight_sha256, model.folder) == (hashes, str(path)):
            return model
        if not created:
            model.folder, model.weight_sha256 = str(path), hashes
            model.hub_id, model.revision, model.architecture = hub_id, revision, architecture
            model.save()
        audit_append(
            actor=user,
            action="base_model.register" if created else "base_model.update",
            object_type="base_model",
            object_id=model.pk,
            payload={
                "name": name,
                "folder": str(path),
                "weight_sha256": hashes,
                "hub_id": hub_id,
                "revision": revision,
            },
        )
    return model


def base_model_default() -> BaseModel | None:
    return BaseModel.objects.filter(name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"]).first()


def base_model_verify(*, base_model: BaseModel) -> None:
    """Check the weights on disk are the ones registered (before a run trusts the folder).
    The folder's safety checks run every time; the hashing only when a weight file changed
    since this process last verified it against the same registered hashes."""
    folder = Path(base_model.folder)
    try:
        signature = _stat_signature(check_folder(folder))
        key = f"{folder}|{json.dumps(base_model.weight_sha256, sort_keys=True)}"
        if _VERIFIED.get(key) == signature:
            return
        hashes = fingerprint(folder)
    except UnsafeModelFolder as exc:
        raise UnsafeBaseModel(str(exc), field="base_model") from exc
    if hashes != base_model.weight_sha256:
        _VERIFIED.pop(key, None)
        raise UnsafeBaseModel(
            f"The weights of {base_model.name} changed on disk since it was registered.",
            field="base_model",
        )
    _VERIFIED[key] = signature
