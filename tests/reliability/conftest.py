"""A small populated world for the reliability suite: one user per role, a queue with items, a
live lease, a review, a routing rule, a ready dataset version, a model version with stored
adapter files, a channel. No torch: the model version's adapter is stand-in bytes."""

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from datasets_app.models import DatasetVersion, DatasetVersionExample, Example
from governance.services.signoff import signoff_request_create
from monitoring.models import DriftAlert
from reviews.models import Lease, Output, Queue, Review, RoutingRule
from reviews.services import queue_claim_next, review_submit
from training_app.models import BaseModel, ModelVersion

from ..factories import OutputFactory, QueueFactory
from ..training_app.governance_helpers import make_channel, make_version

ANONYMOUS = "anonymous"


@dataclass
class World:
    people: dict
    queue: Queue
    outputs: list[Output]
    lease: Lease
    review: Review
    rule: RoutingRule
    dataset: DatasetVersion
    version: ModelVersion
    channel: object
    signoff: object
    alert: object
    spare_channel: object
    approved: ModelVersion

    def token(self, who: str) -> str:
        return Token.objects.get_or_create(user=self.people[who])[0].key


def make_dataset(owner, *, rows: int = 4, name: str = "world") -> DatasetVersion:
    # Ready, with the counts a real build writes (the detail page shows them).
    version = DatasetVersion.objects.create(
        name=name,
        status="ready",
        created_by=owner,
        manifest_hash="0" * 64,
        counts={
            "candidates": rows,
            "total": rows,
            "train": rows - 1,
            "eval": 1,
            "preference_pairs": 0,
            "negatives_available": 0,
        },
    )
    for index in range(rows):
        messages = [
            {"role": "user", "content": f"Question {index}?"},
            {"role": "assistant", "content": f"Answer {index}."},
        ]
        output = OutputFactory(status="resolved", resolution="approved", input=messages[:1])
        example = Example.objects.create(
            output=output,
            kind="positive",
            label="approved",
            resolved_by="single",
            messages=messages,
            source=output.source,
            model_name=output.model_name,
            output_updated_at=output.created_at,
        )
        split = "train" if index < rows - 1 else "eval"
        DatasetVersionExample.objects.create(
            version=version,
            example=example,
            split=split,
            position=index if split == "train" else 0,
            messages=messages,
            weight=1.0,
            label="approved",
            content_hash=f"{index:064x}",
        )
    return version


@pytest.fixture
def training_folders(settings, tmp_path):
    settings.SIGNOFF_TRAINING = {
        **settings.SIGNOFF_TRAINING,
        "MODELS_DIR": tmp_path / "models",
        "RUNS_DIR": tmp_path / "runs",
        "DEVICE": "cpu",
    }
    return tmp_path


@pytest.fixture
def world(personas, training_folders, settings) -> World:
    tmp_path: Path = training_folders
    BaseModel.objects.create(
        name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"],
        folder=str(tmp_path / "base"),
        architecture="LlamaForCausalLM",
        weight_sha256={"model.safetensors": "0" * 64},
    )
    queue = QueueFactory(name="world", lease_seconds=300)
    outputs = OutputFactory.create_batch(6, queue=queue)
    reviewed = queue_claim_next(queue=queue, user=personas["reviewer2"])
    review = review_submit(lease_id=reviewed.pk, user=personas["reviewer2"], decision="approve")
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    # A rule that matches nothing, so ingest in these tests still lands in the default queue.
    rule = RoutingRule.objects.create(
        name="world-rule", position=1, action="route", queue=queue, tag="never-used"
    )
    dataset = make_dataset(personas["ml_engineer"])
    version = make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)
    channel = make_channel("world")
    signoff = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
    )
    approved = make_version(
        launcher=personas["ml_engineer"],
        dataset=dataset,
        tmp_path=tmp_path,
        status="approved",
        name="world-approved",
        seed=1,
    )
    now = timezone.now()
    alert = DriftAlert.objects.create(
        version=version,
        channel=channel,
        metric="correction",
        baseline=0.1,
        baseline_source="default",
        observed=0.5,
        ci_low=0.4,
        ci_high=0.6,
        margin=0.1,
        samples=40,
        window_start=now - timedelta(days=7),
    )
    return World(
        people=personas,
        queue=queue,
        outputs=outputs,
        lease=lease,
        review=review,
        rule=rule,
        dataset=dataset,
        version=version,
        channel=channel,
        signoff=signoff,
        alert=alert,
        spare_channel=make_channel("spare"),
        approved=approved,
    )
