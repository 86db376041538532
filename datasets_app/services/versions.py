"""A dataset version's record and status: requested (building), failed; every move audited."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit_append
from core.lifecycle import transition

from ..errors import DatasetImmutable, InvalidDatasetRequest
from ..models import DatasetVersion
from .build_settings import BuildSettings


def dataset_version_transition(*, version: DatasetVersion, to: str, **changes: Any) -> None:
    """Compare-and-set on the status, against the transition table. Call inside the
    transaction that also appends the audit event."""
    transition(
        version,
        to,
        refused=lambda frm, to: DatasetImmutable(
            f"A dataset version cannot go from {frm} to {to}."
        ),
        changed=lambda frm: DatasetImmutable(
            f"Dataset version {version.pk} changed in the meantime."
        ),
        fields=changes,
    )


def _validated_name(name: str) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name or len(name) > 100:
        raise InvalidDatasetRequest("name must be 1 to 100 characters.", field="name")
    return name


@transaction.atomic
def dataset_version_create(
    *,
    user: AbstractBaseUser,
    name: str,
    parent: DatasetVersion | None = None,
    **options: Any,
) -> DatasetVersion:
    """Record a version to build (status building); `options` as for dataset_version_build."""
    name = _validated_name(name)
    if "pii_allow" not in options:
        # The project's published contact details; stored on the version like any setting.
        options["pii_allow"] = django_settings.SIGNOFF_PII_ALLOW
    settings = BuildSettings.from_options(options)
    if parent is None:
        parent = (
            DatasetVersion.objects.filter(name=name, status=DatasetVersion.Status.READY)
            .order_by("-built_at", "-id")
            .first()
        )
    elif parent.status != DatasetVersion.Status.READY:
        raise InvalidDatasetRequest("parent must be a ready dataset version.", field="parent")
    version = DatasetVersion.objects.create(
        name=name,
        created_by=user,
        parent=parent,
        settings=settings.as_json(),
        progress={"step": "queued", "done": 0, "total": 0},
    )
    audit_append(
        actor=user,
        action="dataset_version.requested",
        object_type="dataset_version",
        object_id=version.pk,
        payload={
            "name": name,
            "parent": parent.pk if parent else None,
            "settings": version.settings,
        },
    )
    return version


@transaction.atomic
def dataset_version_fail(
    *, version_id: int, error: str, run_token: str | None = None
) -> DatasetVersion | None:
    """Record that a build failed (with why); a no-op if the version is no longer building,
    or, given the failing worker's run_token, if that worker no longer holds the build."""
    version = DatasetVersion.objects.select_for_update().filter(pk=version_id).first()
    if version is None or version.status != DatasetVersion.Status.BUILDING:
        return version
    if run_token is not None and version.run_token != run_token:
        return version
    dataset_version_transition(
        version=version, to=DatasetVersion.Status.FAILED, error=error[:2000], built_at=None
    )
    audit_append(
        actor=version.created_by,
        action="dataset_version.failed",
        object_type="dataset_version",
        object_id=version.pk,
        payload={"name": version.name, "error": error[:500]},
    )
    return version
