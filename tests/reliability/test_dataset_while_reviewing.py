"""A dataset version built while reviews keep arriving (reviewer threads, each with its own
database connection, claim and decide throughout the build). Afterwards:

- the version's members and manifest hash do not move as more reviews arrive;
- the manifest hash recomputed from the stored members equals the stored one, and every
  member's content hash matches its stored messages;
- building again with the same settings (the resolved-before cutoff keeps later reviews out)
  gives the same hash;
- a used example can be neither edited nor deleted, the version cannot change state, and the
  reviewer who decided a used item cannot undo that decision.

Runs on SQLite (a file database, WAL) and PostgreSQL alike.
"""

import threading
import time

import pytest
from django.db import close_old_connections, connections
from django.utils import timezone

from core.errors import Conflict
from datasets_app import pipeline
from datasets_app.errors import DatasetImmutable, ExampleInUse
from datasets_app.models import DatasetVersion, DatasetVersionExample, Example
from datasets_app.services import (
    BuildSettings,
    dataset_version_build,
    dataset_version_transition,
    example_delete,
    example_update,
    manifest_hash,
)
from reviews.models import Output, Review
from reviews.services import queue_claim_next, review_submit, review_undo

from ..factories import QueueFactory
from ..waiting import join_threads

BEFORE_CUTOFF = 200
DURING = 1000
BUILDS_DURING = 3
REVIEWERS = 3


def seed(queue, count: int, offset: int) -> None:
    Output.objects.bulk_create(
        Output(
            queue=queue,
            source="live",
            external_id=f"live-{offset + n}",
            model_name="tiny-model",
            model_version="v1",
            input=f"Customer {offset + n} asks about policy {(offset + n) * 7919 % 100003}?",
            output_text=f"Policy {(offset + n) * 7919 % 100003} covers case {offset + n}.",
        )
        for n in range(count)
    )


def decide(queue, user, n: int) -> bool:
    lease = queue_claim_next(queue=queue, user=user)
    if lease is None:
        return False
    if n % 3 == 0:
        review_submit(
            lease_id=lease.pk,
            user=user,
            decision="correct",
            corrected_output=f"Corrected answer {n} by {user.username}.",
        )
    else:
        review_submit(lease_id=lease.pk, user=user, decision="approve")
    return True


def members_of(version: DatasetVersion) -> list[tuple]:
    return list(
        DatasetVersionExample.objects.filter(version=version)
        .order_by("split", "position")
        .values_list(
            "example_id",
            "split",
            "position",
            "messages",
            "rejected_text",
            "weight",
            "label",
            "content_hash",
        )
    )


def recomputed_manifest(version: DatasetVersion) -> str:
    items = []
    for member in DatasetVersionExample.objects.filter(version=version).select_related("example"):
        item = pipeline.Item(
            example_id=member.example_id,
            messages=member.processed_messages,
            label=member.label,
            weight=member.weight,
            rejected_text=member.rejected_text,
            split=member.split,
        )
        pipeline.assign_hashes([item])
        assert item.content_hash == member.content_hash, member.example_id
        items.append(item)
    return manifest_hash(BuildSettings.from_json(version.settings), items)


@pytest.mark.django_db(transaction=True)
def test_a_version_built_while_reviews_arrive_is_immutable_and_reproducible(make_user):
    engineer = make_user("ml_engineer", username="builder")
    early = make_user("reviewer", username="early")
    reviewers = [make_user("reviewer", username=f"live-{i}") for i in range(REVIEWERS)]
    queue = QueueFactory(name="live", lease_seconds=600)
    seed(queue, BEFORE_CUTOFF, 0)
    for n in range(BEFORE_CUTOFF):
        assert decide(queue, early, n)
    time.sleep(0.01)
    cutoff = timezone.now()
    time.sleep(0.01)
    seed(queue, DURING, BEFORE_CUTOFF)

    stop = threading.Event()
    errors: list[BaseException] = []
    decided: list[tuple[float, str]] = []
    lock = threading.Lock()

    def work(user):
        n = 0
        try:
            while not stop.is_set():
                if not decide(queue, user, n):
                    break
                n += 1
                with lock:
                    decided.append((time.monotonic(), user.username))
                time.sleep(0.001)  # let the build's statements in between
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(user,)) for user in reviewers]
    for thread in threads:
        thread.start()
    settings = {"resolved_to": cutoff.isoformat()}
    started = time.monotonic()
    try:
        builds = [
            dataset_version_build(user=engineer, name="live", **settings)
            for _ in range(BUILDS_DURING)
        ]
    finally:
        finished = time.monotonic()
        time.sleep(0.2)  # reviews keep arriving after the build too
        stop.set()
        join_threads(threads, what="the reviewers to stop", progress=lambda: len(decided))
        close_old_connections()
    assert errors == [], [repr(e) for e in errors[:3]]
    during = sum(1 for at, _ in decided if started <= at <= finished)
    after = sum(1 for at, _ in decided if at > finished)
    print(
        f"\n{BUILDS_DURING} builds in {finished - started:.2f} s; "
        f"{during} reviews during them, {after} after"
    )
    assert during > 0, "no review arrived while the build ran"

    version = builds[0]
    assert all(build.status == "ready" for build in builds)
    assert {build.manifest_hash for build in builds} == {version.manifest_hash}
    stored = members_of(version)
    assert len(stored) == BEFORE_CUTOFF  # every item decided before the cutoff, none after
    digest = version.manifest_hash

    # More reviews, by the main thread too, after the build.
    for n in range(10):
        decide(queue, reviewers[0], 1000 + n)
    version.refresh_from_db()
    assert version.manifest_hash == digest and members_of(version) == stored
    assert recomputed_manifest(version) == digest

    rebuilt = dataset_version_build(user=engineer, name="live", **settings)
    assert rebuilt.pk != version.pk and rebuilt.manifest_hash == digest
    assert sorted(m[0] for m in members_of(rebuilt)) == sorted(m[0] for m in stored)
    later = dataset_version_build(user=engineer, name="live-now")
    assert later.manifest_hash != digest  # without the cutoff the later reviews are in

    used = Example.objects.get(pk=stored[0][0])
    edited = [*used.messages[:-1], {"role": "assistant", "content": "Edited after the fact."}]
    with pytest.raises(ExampleInUse):
        example_update(user=engineer, example=used, messages=edited)
    with pytest.raises(ExampleInUse):
        example_delete(user=engineer, example=used)
    with pytest.raises(DatasetImmutable):
        dataset_version_transition(version=version, to=DatasetVersion.Status.BUILDING)
    assert Example.objects.get(pk=used.pk).messages == used.messages

    # The early reviewer's most recent decision is on an item the version uses.
    last = Review.objects.filter(reviewer=early).order_by("-created_at", "-id").first()
    assert DatasetVersionExample.objects.filter(
        version=version, example__output_id=last.output_id
    ).exists()
    with pytest.raises(Conflict, match="used in a dataset version"):
        review_undo(review_id=last.pk, user=early)
    last.refresh_from_db()
    assert last.undone_at is None
    assert Output.objects.get(pk=last.output_id).status == "resolved"

    version.refresh_from_db()
    assert version.manifest_hash == digest and members_of(version) == stored
