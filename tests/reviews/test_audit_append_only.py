"""The audit log is append-only in the database itself (reviews migration 0006): an UPDATE,
DELETE or TRUNCATE of an audit event through the application's own connection is refused on the
spot, not only caught later by `verify_audit`; appending goes on as before; and the table
owner's documented lift for a legal erasure works, after which the verifier names the erased
event (the intended record of it).

tests/reliability/test_audit_tamper_sql.py plays whoever lifts the guard anyway, and proves
that the verifier still catches them.
"""

import importlib
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, connections, transaction

from core.audit import audit_append, audit_seal, audit_verify
from core.models import AuditEvent, AuditHead

from ..audit_guard import run_deferred_checks

TABLE = AuditEvent._meta.db_table
GUARD = importlib.import_module("reviews.migrations.0006_audit_event_append_only")
# Core migration 0002 lets the seal through, once: on SQLite its UPDATE trigger is the one to
# create again (same names; PostgreSQL keeps 0006's triggers with a new function body).
SEAL_ONCE_GUARD = importlib.import_module("core.migrations.0002_audit_sealed_later")
OPERATIONS_DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

# docs/operations.md, "Legal erasure": what the owner runs around the erasure, between BEGIN
# and COMMIT (here the test's own transaction stands in for them).
DOCUMENTED_LIFT = {
    "postgresql": (
        [f"ALTER TABLE {TABLE} DISABLE TRIGGER {GUARD.POSTGRESQL_ROW_TRIGGER};"],
        [f"ALTER TABLE {TABLE} ENABLE TRIGGER {GUARD.POSTGRESQL_ROW_TRIGGER};"],
    ),
    "sqlite": (
        [
            f"DROP TRIGGER {GUARD.SQLITE_UPDATE_TRIGGER};",
            f"DROP TRIGGER {GUARD.SQLITE_DELETE_TRIGGER};",
        ],
        [f"{statement};" for statement in SEAL_ONCE_GUARD.SQLITE_CREATE],
    ),
}


@pytest.fixture(autouse=True)
def _sealing_as_in_production(settings):
    """The test settings seal inline for the rest of the suite; these tests seal as production
    does: appended unsealed, sealed by audit_seal (core/audit/sealer.py)."""
    settings.AUDIT_SEALING = "deferred"


@pytest.fixture
def chain():
    with transaction.atomic():
        for n in range(1, 4):
            audit_append(
                actor=None, action="guard.test", object_type="thing", object_id=n, payload={"n": n}
            )
    audit_seal()
    return list(AuditEvent.objects.order_by("seq"))


def execute(statement: str, params=None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def refused(operation: str):
    return pytest.raises(
        IntegrityError, match=f"audit events are append-only: {operation} on {TABLE} refused"
    )


def snapshot() -> list[tuple]:
    return list(AuditEvent.objects.order_by("seq").values_list())


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {TABLE} SET action = 'rewritten' WHERE seq = 2",
        f"UPDATE {TABLE} SET seq = seq + 100",
    ],
)
def test_a_plain_sql_update_is_refused_and_changes_nothing(chain, statement):
    before = snapshot()
    with refused("UPDATE"), transaction.atomic():
        execute(statement)
    assert snapshot() == before
    assert audit_verify() == 3


@pytest.mark.django_db
def test_an_update_through_the_orm_is_refused(chain):
    with refused("UPDATE"), transaction.atomic():
        AuditEvent.objects.filter(seq=2).update(payload={"n": 99})
    event = AuditEvent.objects.get(seq=3)
    event.action = "rewritten"
    with refused("UPDATE"), transaction.atomic():
        event.save()
    assert audit_verify() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["WHERE seq = 2", "WHERE seq >= 2", ""])
def test_a_plain_sql_delete_is_refused_and_removes_nothing(chain, where):
    """The empty WHERE too: SQLite's truncate shortcut for an unqualified DELETE is off while
    the table has a trigger."""
    before = snapshot()
    with refused("DELETE"), transaction.atomic():
        execute(f"DELETE FROM {TABLE} {where}")
    assert snapshot() == before
    assert audit_verify() == 3


@pytest.mark.django_db
def test_a_delete_through_the_orm_is_refused(chain):
    with refused("DELETE"), transaction.atomic():
        AuditEvent.objects.filter(seq=3).delete()
    with refused("DELETE"), transaction.atomic():
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 3
    assert audit_verify() == 3


@pytest.mark.django_db
@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement",
    [f"TRUNCATE {TABLE}", f"TRUNCATE {TABLE} RESTART IDENTITY", "TRUNCATE auth_user CASCADE"],
)
def test_truncate_is_refused_even_by_cascade(chain, statement):
    """TRUNCATE fires no row trigger; a statement-level one catches it, also when the audit
    table is only reached through a foreign key (actor)."""
    run_deferred_checks()
    with refused("TRUNCATE"), transaction.atomic():
        execute(statement)
    assert audit_verify() == 3


@pytest.mark.django_db
def test_appending_goes_on_after_a_refusal_and_the_head_still_moves(chain):
    with refused("UPDATE"), transaction.atomic():
        execute(f"UPDATE {TABLE} SET payload = payload WHERE seq = 1")
    with transaction.atomic():
        added = audit_append(actor=None, action="guard.after", object_type="thing", object_id=4)
    audit_seal()
    added.refresh_from_db()
    assert added.seq == 4 and added.prev_hash == chain[-1].hash
    head = AuditHead.objects.get()
    assert (head.seq, head.hash) == (4, added.hash)
    assert audit_verify() == 4


@pytest.mark.django_db
def test_the_documented_lift_allows_a_legal_erasure_that_the_verifier_then_names(chain, capsys):
    lift, restore = DOCUMENTED_LIFT[connection.vendor]
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    run_deferred_checks()
    with transaction.atomic():
        for statement in lift:
            execute(statement)
        erased = execute(
            f"UPDATE {TABLE} SET payload = %s{cast}, actor_name = '' WHERE seq = %s",
            ['{"erased": "LEGAL-123"}', 2],
        )
        for statement in restore:
            execute(statement)
    assert erased == 1
    assert AuditEvent.objects.get(seq=2).payload == {"erased": "LEGAL-123"}
    with pytest.raises(CommandError, match=r"BROKEN at event #2: event #2 was altered"):
        call_command("verify_audit")
    # The guard is back: the next change is refused again.
    with refused("UPDATE"), transaction.atomic():
        execute(f"UPDATE {TABLE} SET payload = %s{cast} WHERE seq = 3", ['{"erased": "x"}'])


@pytest.mark.once
def test_docs_operations_spells_the_lift_exactly():
    """An operator copies these statements: they must be the ones the test above runs, and on
    SQLite the triggers they create again must be the migration's, word for word."""

    def words(text: str) -> str:
        return re.sub(r"\s+", " ", text).strip()

    doc = words(OPERATIONS_DOC.read_text(encoding="utf-8"))
    for lift, restore in DOCUMENTED_LIFT.values():
        for statement in [*lift, *restore]:
            assert words(statement) in doc, statement


@pytest.mark.django_db(transaction=True)
def test_manage_py_flush_refuses_to_empty_the_audit_log(chain):
    """Outside the test suite nothing lifts the guard for a flush: it fails and rolls back."""
    operations = type(connections["default"].ops)
    plain_flush = operations.execute_sql_flush.__wrapped__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operations, "execute_sql_flush", plain_flush)
        with pytest.raises(CommandError, match="couldn't be flushed") as failed:
            call_command("flush", interactive=False, verbosity=0)
    assert "audit events are append-only" in str(failed.value.__cause__)
    assert audit_verify() == 3


@pytest.mark.django_db(transaction=True)
def test_the_suites_flush_empties_the_log_and_puts_the_guard_back(chain):
    """The flush pytest-django runs after every transactional test (tests/conftest.py) lifts the
    guard for itself only."""
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists() and not AuditHead.objects.exists()
    with transaction.atomic():
        audit_append(actor=None, action="guard.test", object_type="thing", object_id=1)
    with refused("DELETE"):
        AuditEvent.objects.all().delete()
    assert audit_verify() == 1
