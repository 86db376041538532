"""Building versions: examples and provenance, the pipeline end to end, immutability, the
manifest, transactions and the audit trail."""

import gc

import pytest
from django.db.models import ProtectedError

from core.audit import audit_verify
from core.models import AuditEvent
from datasets_app import services
from datasets_app.errors import DatasetImmutable, ExampleInUse, InvalidDatasetRequest, SourceChanged
from datasets_app.models import DatasetVersion, DatasetVersionExample, Example
from datasets_app.selectors import dataset_version_rows
from datasets_app.services import builds, write
from governance.compliance import example_lineage
from reviews.models import Output, OutputLock, Review
from tests.waiting import join_threads

pytestmark = pytest.mark.django_db

# The manifest of `crafted` built with seed 5. It is computed from content alone, so the
# SQLite and the PostgreSQL passes of the suite must both arrive at exactly this value; if a
# deliberate pipeline change moves it, update it and say so in the commit.
GOLDEN_MANIFEST = "edb296465f3e58aff842e054b1d961a9ff7430f5100cd2c348e3d88528a3cf2a"


def crafted(resolved, *, reverse=False):
    rows = [
        ("What is the excess on my home policy?", "It is 250 pounds.", {}),
        ("what is the  EXCESS on my home policy?", "it is 250 pounds.", {}),  # dup
        ("Can I add my daughter as a named driver to my car insurance policy today",
         "Yes, from the app.", {}),
        ("Can I add my daughter as a named driver to my car insurance policy today please",
         "Yes, in the app.", {}),  # near dup
        ("Email me at jane@example.com about claim 77", "Sent to jane@example.com.", {}),
        ("Is storm damage to a fence covered?", "No, fences are excluded.",
         {"resolution": "corrected", "correction": "Yes, up to 500 pounds.", "by": "consensus"}),
        ("Why was my claim declined?", "Because.",
         {"resolution": "rejected"}),
        ("How do I cancel?", "Call us.", {"by": "lead"}),
    ] + [(f"Distinct question number {n} about policy wording clause {n * 3}",
          f"Answer {n}.", {}) for n in range(12)]  # fmt: skip
    if reverse:
        rows = list(reversed(rows))
    return [resolved(prompt, answer, **kw) for prompt, answer, kw in rows]


def test_it_builds_a_ready_version_with_every_step_reported(resolved, engineer):
    crafted(resolved)
    version = services.dataset_version_build(user=engineer, name="support", seed=5)
    assert version.status == DatasetVersion.Status.READY
    assert len(version.manifest_hash) == 64 and version.built_at
    counts = version.counts
    steps = {s["name"]: s for s in counts["steps"]}
    assert list(steps) == [
        "normalise", "pii", "exact_dedup", "near_dedup", "length", "balance", "split"
    ]  # fmt: skip
    assert counts["candidates"] == 19  # the rejected output is a negative, not a candidate
    assert counts["negatives_available"] == 1
    assert steps["exact_dedup"]["removed"] == 1
    assert steps["near_dedup"]["removed"] == 1
    assert counts["pii"] == {"EMAIL": 2}
    assert counts["train"] + counts["eval"] == counts["total"] == 17
    assert counts["eval"] >= 1
    assert counts["preference_pairs"] == 1
    rows = list(dataset_version_rows(version=version, split="train")) + list(
        dataset_version_rows(version=version, split="eval")
    )
    assert len(rows) == 17
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    texts = [m["content"] for r in rows for m in r["messages"]]
    assert "Email me at <EMAIL> about claim 77" in texts
    assert not any("jane@example.com" in t for t in texts)
    assert "Yes, up to 500 pounds." in texts  # the correction is the target


def test_rows_come_in_the_same_order_every_time(resolved, engineer):
    crafted(resolved)
    version = services.dataset_version_build(user=engineer, name="support", seed=5)
    first = list(dataset_version_rows(version=version, split="train"))
    assert first == list(dataset_version_rows(version=version, split="train"))
    hashes = list(
        DatasetVersionExample.objects.filter(version=version, split="train")
        .order_by("position")
        .values_list("content_hash", flat=True)
    )
    assert hashes == sorted(hashes)


def test_examples_keep_provenance_weight_and_lead_marks(resolved, engineer):
    outputs = crafted(resolved)
    services.examples_sync()
    by_output = {e.output_id: e for e in Example.objects.all()}
    consensus = by_output[outputs[5].pk]
    assert consensus.weight == 2.0 and consensus.reviewer_count == 2
    assert consensus.label == "corrected" and consensus.original_text == "No, fences are excluded."
    # Provenance is relational: the lineage reads the output's reviews and reviewers back.
    lineage = example_lineage(example=consensus)
    assert lineage["output"].pk == outputs[5].pk
    assert [r.decision for r in lineage["reviews"]] == ["correct", "correct"]
    assert len({r.reviewer_id for r in lineage["reviews"]}) == 2
    assert consensus.queue_name == "support"
    lead = by_output[outputs[7].pk]
    assert lead.lead_decided and lead.weight == 1.0
    assert {r.stage for r in example_lineage(example=lead)["reviews"]} == {"review", "lead"}
    rejected = by_output[outputs[6].pk]
    assert rejected.kind == Example.Kind.NEGATIVE
    assert services.examples_sync().created == 0  # idempotent


def test_the_example_lineage_page_shows_its_whole_provenance(resolved, engineer, client):
    outputs = crafted(resolved)
    services.examples_sync()
    example = Example.objects.get(output=outputs[5])
    Output.objects.filter(pk=outputs[5].pk).update(routing_reason="confidence 0.31 < 0.5")
    client.force_login(engineer)
    page = client.get(f"/training/examples/{example.pk}/lineage/").content.decode()
    reviewers = {r.reviewer.username for r in Review.objects.filter(output=outputs[5])}
    assert len(reviewers) == 2 and all(name in page for name in reviewers)
    assert "confidence 0.31 &lt; 0.5" in page and "support" in page
    assert "2.0 (2 reviewers)" in page and "Guidelines" in page


def test_auto_accepted_outputs_are_left_out_unless_asked_and_then_marked(resolved, engineer):
    resolved("A reviewed question about pets", "Reviewed.")
    resolved("An unreviewed question about boats", "Auto.", status=Output.Status.AUTO_ACCEPTED)
    plain = services.dataset_version_build(user=engineer, name="a", eval_fraction=0)
    assert plain.counts["total"] == 1
    both = services.dataset_version_build(
        user=engineer, name="b", eval_fraction=0, include_auto_accepted=True
    )
    assert both.counts["total"] == 2
    unreviewed = Example.objects.get(unreviewed=True)
    assert unreviewed.weight == 0.5 and unreviewed.output.status == "auto_accepted"


def test_filters_select_queues_tags_and_labels(resolved, engineer):
    resolved("Billing question one here", "A", queue="billing", tags=["money"])
    resolved("Claims question two here", "B", queue="claims", tags=["storm"])
    resolved("Claims question three here", "x", queue="claims", resolution="corrected",
             correction="C")  # fmt: skip
    v = services.dataset_version_build(user=engineer, name="f", queues=["claims"], eval_fraction=0)
    assert v.counts["total"] == 2
    v = services.dataset_version_build(user=engineer, name="g", tags=["money"], eval_fraction=0)
    assert v.counts["total"] == 1
    v = services.dataset_version_build(
        user=engineer, name="h", labels=["corrected"], eval_fraction=0
    )
    assert v.counts["total"] == 1 and v.counts["labels"]["train"] == {"corrected": 1}


def test_the_manifest_is_the_same_across_runs_orders_and_ids(resolved, engineer):
    crafted(resolved)
    first = services.dataset_version_build(user=engineer, name="one", seed=5)
    second = services.dataset_version_build(user=engineer, name="two", seed=5)
    assert first.manifest_hash == second.manifest_hash
    assert second.parent is None and first.parent is None
    other_seed = services.dataset_version_build(user=engineer, name="three", seed=6)
    assert other_seed.manifest_hash != first.manifest_hash


@pytest.mark.parametrize("reverse", [False, True])
def test_the_manifest_matches_the_pinned_value_on_every_database(resolved, engineer, reverse):
    crafted(resolved, reverse=reverse)  # other ids, other creation times
    version = services.dataset_version_build(user=engineer, name="pinned", seed=5)
    assert version.manifest_hash == GOLDEN_MANIFEST


def test_a_version_names_its_parent_and_diffs_against_it(resolved, engineer):
    from datasets_app.selectors import dataset_version_diff

    crafted(resolved)
    v1 = services.dataset_version_build(user=engineer, name="support", seed=5)
    resolved("A brand new question about travel cover abroad", "Yes.")
    v2 = services.dataset_version_build(user=engineer, name="support", seed=5)
    assert v2.parent_id == v1.pk
    diff = dataset_version_diff(version=v2, other=v1)
    assert len(diff.added) == 1 and not diff.removed and not diff.changed
    v3 = services.dataset_version_build(user=engineer, name="support", seed=5, pii="drop")
    diff = dataset_version_diff(version=v3, other=v2)
    assert len(diff.removed) == 1 and not diff.added
    v4 = services.dataset_version_build(user=engineer, name="support", seed=5, pii="off")
    diff = dataset_version_diff(version=v4, other=v2)
    assert len(diff.changed) == 1  # the e-mail example, unmasked


def test_used_outputs_are_locked_and_examples_are_immutable(resolved, engineer):
    outputs = crafted(resolved)
    version = services.dataset_version_build(user=engineer, name="support", seed=5)
    used = set(
        DatasetVersionExample.objects.filter(version=version).values_list(
            "example__output_id", flat=True
        )
    )
    locked = set(OutputLock.objects.values_list("output_id", flat=True))
    assert used == locked and len(used) == 17
    member = DatasetVersionExample.objects.filter(version=version).first()
    example = member.example
    with pytest.raises(ExampleInUse):
        services.example_update(
            user=engineer,
            example=example,
            messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
        )
    with pytest.raises(ExampleInUse):
        services.example_delete(user=engineer, example=example)
    with pytest.raises(ProtectedError):
        example.delete()
    with pytest.raises(DatasetImmutable):
        services.dataset_version_transition(version=version, to=DatasetVersion.Status.FAILED)
    example.refresh_from_db()
    assert example.messages[-1]["content"] != "y"
    # An unused example (the rejected one) may still be edited, with an audit event.
    negative = Example.objects.get(output=outputs[6])
    services.example_update(
        user=engineer,
        example=negative,
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
    )
    assert AuditEvent.objects.filter(action="example.updated").count() == 1


def test_builds_are_audited_and_the_chain_holds(resolved, engineer):
    crafted(resolved)
    version = services.dataset_version_build(user=engineer, name="support", seed=5)
    actions = list(
        AuditEvent.objects.filter(object_type="dataset_version", object_id=str(version.pk))
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["dataset_version.requested", "dataset_version.built"]
    built = AuditEvent.objects.get(action="dataset_version.built")
    assert built.payload["manifest_hash"] == version.manifest_hash
    assert audit_verify() >= 2


@pytest.fixture
def review_undone_mid_build(resolved, monkeypatch):
    """A review is undone while the pipeline runs (outside any transaction)."""
    outputs = crafted(resolved)
    real = builds.run_pipeline

    def undo_during_pipeline(items, settings, **kw):
        Output.objects.filter(pk=outputs[-1].pk).update(status="pending", resolution="")
        return real(items, settings, **kw)

    monkeypatch.setattr(builds, "run_pipeline", undo_during_pipeline)


def test_a_source_change_during_the_build_fails_it_and_writes_nothing(
    review_undone_mid_build, engineer
):
    with pytest.raises(SourceChanged):
        services.dataset_version_build(user=engineer, name="support", seed=5)
    version = DatasetVersion.objects.get()
    assert version.status == DatasetVersion.Status.FAILED and "SourceChanged" in version.error
    assert not DatasetVersionExample.objects.exists()
    assert not OutputLock.objects.exists()
    assert AuditEvent.objects.filter(action="dataset_version.failed").count() == 1


def test_an_inline_build_through_start_that_fails_writes_nothing(review_undone_mid_build, engineer):
    with pytest.raises(SourceChanged):
        services.dataset_version_start(user=engineer, name="support", run="inline", seed=5)
    # The request is refused as a whole: no version, no members, no locks, no audit events.
    assert not DatasetVersion.objects.exists()
    assert not OutputLock.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="dataset_version").exists()


def test_the_cycle_collector_pauses_for_a_build_and_resumes_after_it_even_on_failure(
    review_undone_mid_build, engineer, monkeypatch
):
    seen = []
    real = builds.run_pipeline
    monkeypatch.setattr(
        builds, "run_pipeline", lambda *a, **kw: seen.append(gc.isenabled()) or real(*a, **kw)
    )
    assert gc.isenabled()
    with pytest.raises(SourceChanged):
        services.dataset_version_build(user=engineer, name="support", seed=5)
    assert seen == [False] and gc.isenabled()


def test_a_redelivered_build_does_nothing(resolved, engineer):
    crafted(resolved)
    version = services.dataset_version_create(user=engineer, name="support", seed=5)
    assert services.dataset_version_run(version_id=version.pk) is not None
    assert services.dataset_version_run(version_id=version.pk) is None
    assert services.dataset_version_run(version_id=999_999) is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"eval_fraction": 1.5}, "eval_fraction"),
        ({"near_dup_threshold": "x"}, "near_dup_threshold"),
        ({"caps": {"colour": {"red": 1}}}, "caps"),
        ({"pii_patterns": {"POLICY": "("}}, "pii_patterns"),
        ({"pii_patterns": {"lower": "x"}}, "pii_patterns"),
        ({"tokenizer_path": "/nope/tokenizer.json"}, "tokenizer_path"),
        ({"labels": ["rejected"]}, "labels"),
        ({"resolved_from": "yesterday"}, "resolved_from"),
        ({"stratify": "colour"}, "stratify"),
        ({"pii": "maybe"}, "pii"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(engineer, options, field):
    with pytest.raises(InvalidDatasetRequest) as caught:
        services.dataset_version_build(user=engineer, name="x", **options)
    assert caught.value.field == field
    assert not DatasetVersion.objects.exists()  # nothing half-written


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_undo_racing_the_build_waits_for_it_and_is_then_refused(resolved, engineer, monkeypatch):
    """The build locks its outputs' rows before it checks them; an undo arriving then waits for
    the build's commit, finds the lock, and is refused: the version never holds an undone
    review."""
    import threading

    from django.db import connection as main_connection

    from reviews.errors import Conflict
    from reviews.services import review_undo

    outputs = [resolved(f"Question {n} on clause {n * 7}?", f"Answer {n}.") for n in range(6)]
    raced = outputs[-1]  # its review is the reviewer's latest: the one undo may take back
    review = Review.objects.filter(output=raced).get()
    outcome: dict[str, object] = {}

    def undo() -> None:
        from django.db import connection

        try:
            review_undo(review_id=review.pk, user=review.reviewer)
            outcome["undo"] = "done"
        except Conflict as exc:
            outcome["undo"] = str(exc)
        finally:
            connection.close()

    real_insert = write.insert_tuples

    def write_members_while_an_undo_arrives(model, names, rows):
        # The outputs are locked and checked by now; the build's transaction is still open.
        assert main_connection.in_atomic_block
        assert OutputLock.objects.filter(output=raced).exists()  # seen by this transaction
        racer = threading.Thread(target=undo)
        racer.start()
        racer.join(timeout=1.0)
        outcome["waited"] = racer.is_alive()  # blocked on the output row the build locked
        outcome["racer"] = racer
        return real_insert(model, names, rows)

    monkeypatch.setattr(write, "insert_tuples", write_members_while_an_undo_arrives)
    version = services.dataset_version_build(user=engineer, name="race", seed=1)
    join_threads([outcome["racer"]], what="the undo that raced the build")
    assert version.status == DatasetVersion.Status.READY
    assert outcome["waited"] is True
    assert "dataset version" in outcome["undo"]
    assert Output.objects.get(pk=raced.pk).status == Output.Status.RESOLVED
    assert OutputLock.objects.filter(output=raced).exists()
