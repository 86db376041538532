"""core.lifecycle.transition: the table decides, the update is a compare-and-set, the audit
event shares its transaction; and every lifecycle model's table names only real statuses."""

import pytest
from django.apps import apps
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Concat

from core.audit import audit_append
from core.errors import Conflict
from core.lifecycle import allowed_moves, transition
from core.models import AuditEvent
from datasets_app.models import DatasetVersion

Status = DatasetVersion.Status


class Refused(Conflict):
    code = "test_refused"


class Changed(Conflict):
    code = "test_changed"


def refused(frm, to):
    return Refused(f"cannot go from {frm} to {to}")


def changed(frm):
    return Changed(f"changed under us (was {frm})")


class RecordingWriter:
    """Stands in for reviews' audit_append: core takes the writer as an argument."""

    def __init__(self):
        self.events = []

    def __call__(self, **event):
        self.events.append(event)


@pytest.fixture
def version(db, personas):
    return DatasetVersion.objects.create(name="world", created_by=personas["admin"])


def status_in_db(obj):
    return type(obj).objects.values_list("status", flat=True).get(pk=obj.pk)


def test_an_allowed_move_updates_the_row_and_the_object_and_audits(version, personas):
    writer = RecordingWriter()
    returned = transition(
        version,
        Status.FAILED,
        refused=refused,
        changed=changed,
        fields={"error": "boom"},
        audit=writer,
        audit_as="dataset_version",
        actor=personas["admin"],
        payload={"why": "test"},
    )
    assert returned is version
    assert (version.status, version.error) == (Status.FAILED, "boom")
    row = DatasetVersion.objects.get(pk=version.pk)
    assert (row.status, row.error) == (Status.FAILED, "boom")
    assert writer.events == [
        {
            "actor": personas["admin"],
            "action": "dataset_version.failed",
            "object_type": "dataset_version",
            "object_id": version.pk,
            "payload": {"from": Status.BUILDING, "to": Status.FAILED, "why": "test"},
        }
    ]


def test_without_an_audit_writer_no_event_is_written(version):
    before = AuditEvent.objects.count()
    transition(version, Status.READY, refused=refused, changed=changed)
    assert status_in_db(version) == Status.READY
    assert AuditEvent.objects.count() == before


def test_the_real_audit_writer_appends_one_chained_event(version, personas):
    before = AuditEvent.objects.count()
    with transaction.atomic():
        transition(
            version,
            Status.READY,
            refused=refused,
            changed=changed,
            audit=audit_append,
            audit_as="dataset_version",
            actor=personas["admin"],
        )
    event = AuditEvent.objects.order_by("-seq").first()
    assert AuditEvent.objects.count() == before + 1
    assert (event.action, event.object_type, event.object_id) == (
        "dataset_version.ready",
        "dataset_version",
        str(version.pk),
    )
    assert event.payload == {"from": "building", "to": "ready"}


def test_the_payload_may_be_computed_from_the_updated_object(version):
    writer = RecordingWriter()
    transition(
        version,
        Status.FAILED,
        refused=refused,
        changed=changed,
        fields={"error": "late"},
        refresh=True,
        audit=writer,
        audit_as="dataset_version",
        payload=lambda obj: {"error": obj.error},
    )
    assert writer.events[0]["payload"] == {"from": "building", "to": "failed", "error": "late"}


def test_a_move_outside_the_table_changes_nothing_writes_nothing_and_raises(version):
    DatasetVersion.objects.filter(pk=version.pk).update(status=Status.READY)
    version.refresh_from_db()
    writer = RecordingWriter()
    with pytest.raises(Refused, match="cannot go from ready to failed"):
        transition(
            version,
            Status.FAILED,
            refused=refused,
            changed=changed,
            fields={"error": "no"},
            audit=writer,
            audit_as="dataset_version",
        )
    assert (version.status, version.error) == (Status.READY, "")
    row = DatasetVersion.objects.get(pk=version.pk)
    assert (row.status, row.error) == (Status.READY, "")
    assert writer.events == []


def test_a_change_between_read_and_update_is_refused(version):
    """Compare-and-set: the object says building, but another process already failed it."""
    DatasetVersion.objects.filter(pk=version.pk).update(status=Status.FAILED, error="theirs")
    writer = RecordingWriter()
    with pytest.raises(Changed, match="was building"):
        transition(
            version,
            Status.READY,
            refused=refused,
            changed=changed,
            audit=writer,
            audit_as="dataset_version",
        )
    row = DatasetVersion.objects.get(pk=version.pk)
    assert (row.status, row.error) == (Status.FAILED, "theirs")
    assert version.status == Status.BUILDING
    assert writer.events == []


def test_a_row_that_no_longer_matches_where_is_refused(version):
    """`where` adds conditions to the compare-and-set (a worker's lease, say)."""
    with pytest.raises(Changed):
        transition(
            version, Status.READY, refused=refused, changed=changed, where={"run_token": "other"}
        )
    assert status_in_db(version) == Status.BUILDING


def test_a_lost_race_can_be_caught_inside_the_callers_transaction(version):
    """The refusal is raised outside the inner atomic block: the caller's transaction is
    still usable, so a worker that lost its lease can log and carry on."""
    DatasetVersion.objects.filter(pk=version.pk).update(status=Status.FAILED)
    with transaction.atomic():
        with pytest.raises(Changed):
            transition(version, Status.READY, refused=refused, changed=changed)
        assert status_in_db(version) == Status.FAILED


def test_a_failing_audit_writer_undoes_the_update(version):
    """The update and its audit event share one transaction."""

    def broken_writer(**event):
        raise RuntimeError("audit store down")

    # The caller's transaction (services own one) rolls back as a whole.
    with pytest.raises(RuntimeError, match="audit store down"), transaction.atomic():
        transition(
            version,
            Status.READY,
            refused=refused,
            changed=changed,
            audit=broken_writer,
            audit_as="dataset_version",
        )
    assert status_in_db(version) == Status.BUILDING


def test_touch_stamps_the_row_but_not_the_object(version):
    """As Output's updated_at always was: set in the database, the object keeps its read."""
    transition(version, Status.READY, refused=refused, changed=changed, touch=("built_at",))
    assert version.built_at is None
    assert DatasetVersion.objects.get(pk=version.pk).built_at is not None


def test_an_expression_is_written_but_not_copied_onto_the_object(version):
    transition(
        version,
        Status.FAILED,
        refused=refused,
        changed=changed,
        fields={"error": Concat(Value("a"), Value("b"))},
    )
    assert version.error == ""
    assert DatasetVersion.objects.get(pk=version.pk).error == "ab"


# -- every lifecycle model's table -------------------------------------------------------------

LIFECYCLE_MODELS = [model for model in apps.get_models() if hasattr(model, "TRANSITIONS")]
EXPECTED = {
    "reviews.Output",
    "datasets_app.DatasetVersion",
    "training_app.TrainingRun",
    "training_app.ModelVersion",
    "training_app.Evaluation",
    "governance.SignoffRequest",
    "monitoring.DriftAlert",
}


def test_every_lifecycle_model_is_found():
    assert {model._meta.label for model in LIFECYCLE_MODELS} >= EXPECTED


@pytest.mark.parametrize("model", LIFECYCLE_MODELS, ids=lambda model: model._meta.label)
def test_the_table_names_only_choices_of_the_status_field(model):
    choices = {value for value, _ in model._meta.get_field("status").choices}
    named = set(model.TRANSITIONS) | {to for moves in model.TRANSITIONS.values() for to in moves}
    assert named <= choices, named - choices
    # Every status has a row, a terminal one an empty set: a forgotten status is not silently
    # treated as terminal.
    assert set(model.TRANSITIONS) == choices, choices - set(model.TRANSITIONS)


@pytest.mark.parametrize("model", LIFECYCLE_MODELS, ids=lambda model: model._meta.label)
def test_allowed_moves_reads_the_table(model):
    for frm, moves in model.TRANSITIONS.items():
        assert allowed_moves(model, str(frm)) == set(moves)
    assert allowed_moves(model, "no-such-status") == set()
