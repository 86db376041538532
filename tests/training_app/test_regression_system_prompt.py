"""A regression evaluation asks the candidate the way it was trained: with the system message
its training examples open with, as `generate` does (issue 18)."""

import pytest

from training_app.models import Evaluation
from training_app.services.evaluations import _evaluation_rows

from ..reliability.conftest import make_dataset
from .governance_helpers import make_channel, make_version
from .live_helpers import register_fake_base_model

SYSTEM = "You are Harbor Mutual's assistant. Answer in two sentences."


@pytest.mark.django_db
def test_regression_rows_open_with_the_system_message_the_version_was_trained_with(
    personas, training_dirs, tmp_path
):
    register_fake_base_model(tmp_path / "base")
    dataset = make_dataset(personas["ml_engineer"], name="sys")
    for member in dataset.members.all():
        member.messages = [{"role": "system", "content": SYSTEM}, *member.messages]
        member.save(update_fields=["messages"])
    version = make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)
    channel = make_channel("production")
    evaluation = Evaluation(
        version=version, dataset_version=dataset, split="regression", channel=channel
    )
    rows = list(_evaluation_rows(evaluation))
    assert len(rows) == 2
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][0]["content"] == SYSTEM
