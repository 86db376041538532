"""Reads of governance: channels and sign-off requests by key, and how far a request's
comparisons have got."""

from collections.abc import Iterator
from typing import Any

from datasets_app.selectors import dataset_version_system_prompt
from governance.errors import ChannelNotFound, SignoffRequestNotFound
from governance.models import Channel, RegressionCase, SignoffRequest
from training_app.models import Evaluation
from training_app.progress_selectors import EvaluationsProgress, evaluations_progress


def signoff_comparisons_progress(*, request: SignoffRequest) -> EvaluationsProgress:
    return evaluations_progress(
        list(request.evaluations.select_related("reference", "channel").order_by("created_at"))
    )


def channel_get(name: str) -> Channel:
    channel = Channel.objects.select_related("live_version", "live_deployment").filter(name=name)
    found = channel.first()
    if found is None:
        raise ChannelNotFound(f"No channel {name}.")
    return found


def signoff_request_get(pk: int) -> SignoffRequest:
    found = (
        SignoffRequest.objects.select_related("version", "channel", "live_version", "requested_by")
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise SignoffRequestNotFound(f"No sign-off request {pk}.")
    return found


def regression_rows(evaluation: Evaluation) -> Iterator[dict[str, Any]]:
    """The rows of a "regression" evaluation: its channel's regression set, asked as the version
    was trained, as generate asks it (with the training-time system prompt); the reference
    model gets the same messages."""
    system = dataset_version_system_prompt(version_id=evaluation.dataset_version_id)
    opening = [{"role": "system", "content": system}] if system else []
    for case in RegressionCase.objects.filter(channel_id=evaluation.channel_id):
        yield {
            "example_id": f"regression-{case.pk}",
            "messages": [
                *opening,
                {"role": "user", "content": case.prompt},
                {"role": "assistant", "content": case.reference},
            ],
            "weight": 1.0,
        }
