"""The reliability suite's populated world (a user per role, a queue, a dataset, versions with
stand-in adapters, channels; no torch), plus released versions on a channel."""

import pytest

from governance.models import SignoffRequest
from governance.services import channel_deploy
from training_app.models import ModelVersion

from ..reliability.conftest import training_folders, world  # noqa: F401  (fixtures)
from ..training_app.governance_helpers import make_version


def signed_off(version: ModelVersion, channel, requester) -> ModelVersion:
    """Approved for `channel` without the comparisons: the pages only read the outcome."""
    SignoffRequest.objects.create(
        version=version, channel=channel, status="approved", requested_by=requester
    )
    ModelVersion.objects.filter(pk=version.pk).update(status="approved")
    version.refresh_from_db()
    return version


@pytest.fixture
def releases(world, training_folders):  # noqa: F811
    """Two versions signed off for the world's channel, neither deployed yet."""
    engineer = world.people["ml_engineer"]
    first = signed_off(world.approved, world.channel, engineer)
    second = signed_off(
        make_version(
            launcher=engineer,
            dataset=world.dataset,
            tmp_path=training_folders,
            name="world-second",
            seed=2,
        ),
        world.channel,
        engineer,
    )
    return first, second


def deploy(the_world, version):
    return channel_deploy(
        user=the_world.people["deployer"], channel=the_world.channel, version=version
    )
