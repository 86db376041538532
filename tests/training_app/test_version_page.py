"""The version page of a version still training: nothing about its environment is known yet,
and the page says so instead of printing separators around blanks."""

import pytest

from training_app.models import ModelVersion
from training_app.services import training_run_create

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = pytest.mark.once


def test_a_version_still_training_says_its_environment_comes_later(
    client, personas, make_dataset_version, tiny_base_model, training_dirs
):
    run = training_run_create(
        user=personas["ml_engineer"],
        dataset_version=make_dataset_version(2, 1),
        enqueue=False,
        hyperparameters={"num_epochs": 1},
    )
    version = ModelVersion.objects.get(run=run)
    assert version.status == "training" and version.environment == {}
    client.force_login(personas["ml_engineer"])
    page = client.get(f"/training/versions/{version.pk}/").content.decode()
    assert "<dt>Environment</dt><dd>— (recorded when training finishes)</dd>" in page
