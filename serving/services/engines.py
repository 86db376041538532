"""What deploy, rollback and retire ask of the serving backend (through governance's
`ServingHook`, registered in serving/apps.py), and the maintenance step that retries what an
engine missed."""

from typing import Any

from governance.models import Channel
from serving.backends import serving_backend
from training_app.models import ModelVersion


def serving_adapter_prepare(version: ModelVersion) -> dict[str, Any]:
    """Make the version answerable on the engines before it goes live; raises (refusing the
    deployment) when none takes it."""
    return serving_backend().load_adapter(version=version)


def serving_adapter_release(version: ModelVersion) -> dict[str, Any]:
    """Take the version's adapter out unless a channel still serves it. An engine that is down
    or refuses is logged, not raised (the version is already off its channel); the maintenance
    step takes it out later."""
    if Channel.objects.filter(live_version_id=version.pk).exists():
        return {}
    return serving_backend().unload_adapter(version=version)


def engine_adapters_sync() -> dict[str, list[str]]:
    """For `run_maintenance`: every engine holds exactly the live versions' adapters."""
    live = list(
        ModelVersion.objects.filter(
            pk__in=Channel.objects.exclude(live_version=None).values("live_version")
        ).select_related("base_model")
    )
    return serving_backend().sync(live=live)
