"""Checking the audit log against a head (sequence number and hash) taken earlier, as a
compliance report records it: `manage.py verify_audit --head SEQ:HASH`.

The chain alone cannot tell a log that someone with the table owner's rights rewrote, hashes
recomputed and published head moved, from the original; a head kept outside the database can.
Tampering lifts the table's append-only triggers first, as such an owner would."""

import json
from contextlib import contextmanager
from datetime import datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from core.audit import (
    audit_append,
    audit_seal,
    audit_verified_head,
    audit_verify_against_head,
)
from core.audit.chain import event_hash
from core.models import AuditEvent, AuditHead

pytestmark = pytest.mark.django_db

TABLE = AuditEvent._meta.db_table
HEAD_TABLE = AuditHead._meta.db_table


def append(actor, count: int, start: int = 1) -> None:
    with transaction.atomic():
        for n in range(start, start + count):
            audit_append(
                actor=actor,
                action="head.test",
                object_type="thing",
                object_id=n,
                payload={"n": n, "text": "é ünïcode"},
            )
    audit_seal()  # events are sealed after they commit; the tampering below is of sealed ones


@pytest.fixture(autouse=True)
def _sealing_as_in_production(settings):
    """The test settings seal inline for the rest of the suite; these tests seal as production
    does: appended unsealed, sealed by audit_seal (core/audit/sealer.py)."""
    settings.AUDIT_SEALING = "deferred"


@pytest.fixture
def chain(personas):
    append(personas["admin"], 5)
    return list(AuditEvent.objects.order_by("seq"))


@contextmanager
def audit_guard_lifted():
    """Lift whatever triggers guard the audit table (reviews migration 0006 makes it
    append-only) for the block, and put them back; all inside the test's transaction.

    PostgreSQL refuses ALTER TABLE while the transaction holds pending trigger events (the
    deferred foreign-key checks of the events just written): check_constraints runs them
    first (SET CONSTRAINTS ALL IMMEDIATE, then DEFERRED again)."""
    connection.check_constraints()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            lift = [f"ALTER TABLE {TABLE} DISABLE TRIGGER USER"]
            restore = [f"ALTER TABLE {TABLE} ENABLE TRIGGER USER"]
        else:  # SQLite cannot disable a trigger: drop it, then create it again from its text
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                [TABLE],
            )
            triggers = cursor.fetchall()
            lift = [f'DROP TRIGGER "{name}"' for name, _ in triggers]
            restore = [text for _, text in triggers]
        for statement in lift:
            cursor.execute(statement)
    yield
    connection.check_constraints()
    with connection.cursor() as cursor:
        for statement in restore:
            cursor.execute(statement)


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, list(params))
        return cursor.rowcount


def sql_set_payload(seq: int, payload: dict) -> None:
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    assert sql(f"UPDATE {TABLE} SET payload = %s{cast} WHERE seq = %s", [json.dumps(payload), seq])


def forge_rewrite(seq: int, payload: dict) -> None:
    """Rewrite event #seq's payload in SQL and recompute every hash from it on, and the
    published head: a chain that verifies on its own."""
    with audit_guard_lifted():
        sql_set_payload(seq, payload)
        prev_hash = AuditEvent.objects.get(seq=seq).prev_hash
        for event in AuditEvent.objects.filter(seq__gte=seq).order_by("seq"):
            digest = event_hash(
                prev_hash=prev_hash,
                seq=event.seq,
                created_at=event.created_at,
                actor_id=event.actor_id,
                actor_name=event.actor_name,
                action=event.action,
                object_type=event.object_type,
                object_id=event.object_id,
                payload=event.payload,
            )
            sql(
                f"UPDATE {TABLE} SET prev_hash = %s, hash = %s WHERE seq = %s",
                [prev_hash, digest, event.seq],
            )
            prev_hash = digest
        sql(f"UPDATE {HEAD_TABLE} SET hash = %s WHERE id = 1", [prev_hash])


def verify(capsys, **options) -> str:
    call_command("verify_audit", **options)
    return capsys.readouterr().out


def test_the_head_names_the_last_event_verified(chain):
    head = audit_verified_head()
    assert (head["seq"], head["hash"]) == (5, chain[-1].hash)
    assert head["event_at"] == chain[-1].created_at.isoformat()
    assert datetime.fromisoformat(head["verified_at"]) >= chain[-1].created_at


def test_an_intact_log_holds_its_head_and_an_earlier_one(chain, personas, capsys):
    out = verify(capsys, head=f"5:{chain[-1].hash}")
    assert "5 events verified" in out and "head held: event #5" in out
    # The log goes on growing after a report was made: its head still holds.
    append(personas["admin"], 3, start=6)
    out = verify(capsys, head=f"3:{chain[2].hash.upper()}")
    assert "8 events verified" in out and "head held: event #3" in out
    assert audit_verify_against_head(seq=5, head_hash=chain[-1].hash) == 8


def test_a_head_with_another_hash_names_that_event(chain, capsys):
    with pytest.raises(CommandError) as refused:
        verify(capsys, head=f"3:{'ab' * 32}")
    message = str(refused.value)
    assert message.startswith("audit chain BROKEN at event #3:")
    assert f"has hash {chain[2].hash[:16]}… but the head recorded {'ab' * 8}…" in message
    assert "rewritten since the head was taken" in message


def test_a_head_past_the_end_of_the_log_names_the_missing_event(chain, capsys):
    with pytest.raises(CommandError) as refused:
        verify(capsys, head=f"9:{chain[-1].hash}")
    message = str(refused.value)
    assert message.startswith("audit chain BROKEN at event #9:")
    assert "missing (the log ends at #5)" in message and "truncated" in message


def test_an_event_updated_before_the_head_is_caught(chain, capsys):
    with audit_guard_lifted():
        sql_set_payload(2, {"n": 99})
    with pytest.raises(CommandError, match=r"BROKEN at event #2: event #2 was altered"):
        verify(capsys, head=f"4:{chain[3].hash}")


def test_a_rewritten_log_verifies_alone_but_not_against_the_head(chain, capsys):
    forge_rewrite(2, {"n": 99, "text": "rewritten"})
    assert "5 events verified" in verify(capsys)  # the chain alone cannot tell
    with pytest.raises(CommandError) as refused:
        verify(capsys, head=f"4:{chain[3].hash}")
    message = str(refused.value)
    assert message.startswith("audit chain BROKEN at event #4:")
    assert "rewritten since the head was taken" in message


def test_a_truncated_log_with_its_head_moved_back_misses_the_event(chain, capsys):
    with audit_guard_lifted():
        assert sql(f"DELETE FROM {TABLE} WHERE seq >= 4") == 2
    sql(f"UPDATE {HEAD_TABLE} SET seq = 3, hash = %s WHERE id = 1", [chain[2].hash])
    assert "3 events verified" in verify(capsys)  # the chain alone cannot tell
    with pytest.raises(CommandError, match=r"BROKEN at event #5: event #5 named by the head is "):
        verify(capsys, head=f"5:{chain[-1].hash}")


@pytest.mark.parametrize("head", ["5", "5:abc", f"x:{'a' * 64}", f"-1:{'a' * 64}"])
def test_a_malformed_head_is_refused(chain, capsys, head):
    with pytest.raises(CommandError, match="expected SEQ:HASH"):
        verify(capsys, head=head)


def test_a_report_without_a_head_is_refused(chain, capsys, tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"audit_chain": {"verified": False, "head": None}}))
    with pytest.raises(CommandError, match="records no audit chain head"):
        verify(capsys, report=str(report))
