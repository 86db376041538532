"""The sealer (core/audit/sealer.py): events are written unsealed with no lock, sealed later in
id order below the horizon, once; verification says how far the chain is sealed, verifies
incrementally from a head, and names events inserted below the sealed chain or sealed out of
order. The tamper tests (tests/reviews/test_audit*.py, tests/reliability/test_audit_tamper_sql.py)
run on the same deferred path."""

import threading
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.audit import (
    audit_append,
    audit_seal,
    audit_sealing_status,
    audit_verify,
    audit_verify_since,
)
from core.audit import sealer as sealer_module
from core.audit.chain import event_hash
from core.errors import AuditChainBroken
from core.maintenance import maintenance_once
from core.models import AuditEvent, AuditHead

TABLE = AuditEvent._meta.db_table


@pytest.fixture(autouse=True)
def _deferred(settings):
    settings.AUDIT_SEALING = "deferred"


def append(count: int, start: int = 1) -> list[AuditEvent]:
    with transaction.atomic():
        return [
            audit_append(
                actor=None, action="sealer.test", object_type="thing", object_id=n, payload={"n": n}
            )
            for n in range(start, start + count)
        ]


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, list(params))
        return cursor.rowcount


def unsealed_event(**fields) -> AuditEvent:
    values = {
        "created_at": timezone.now(),
        "actor_name": "system",
        "action": "sealer.test",
        "object_type": "thing",
        "object_id": "x",
        "payload": {},
    }
    return AuditEvent.objects.create(**{**values, **fields})


@pytest.mark.django_db
def test_it_appends_unsealed_and_seals_in_id_order():
    written = append(4)
    assert all(e.seq is None and e.hash is None for e in written)
    assert not AuditHead.objects.exists()  # appenders never touch the head
    assert audit_seal().sealed == 4
    chain = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in chain] == [1, 2, 3, 4]
    assert [e.pk for e in chain] == sorted(e.pk for e in written)
    assert AuditHead.objects.get().hash == chain[-1].hash
    assert audit_seal().sealed == 0  # idempotent
    assert audit_verify() == 4


@pytest.mark.django_db
def test_it_seals_in_batches(monkeypatch):
    monkeypatch.setattr(sealer_module, "SEAL_BATCH", 3)
    append(7)
    assert audit_seal().sealed == 7
    assert audit_verify() == 7


@pytest.mark.django_db
def test_verify_seals_on_read():
    append(3)
    assert audit_verify() == 3
    assert not AuditEvent.objects.filter(seq__isnull=True).exists()


@pytest.mark.django_db
def test_the_seal_is_written_once_and_nothing_else_changes():
    (event,) = append(1)
    refused = pytest.raises(IntegrityError, match="audit events are append-only: UPDATE")
    with refused, transaction.atomic():  # the seal together with a change of content
        sql(
            f"UPDATE {TABLE} SET seq = 1, prev_hash = %s, hash = %s, action = 'x' WHERE id = %s",
            ["0" * 64, "a" * 64, event.pk],
        )
    with refused, transaction.atomic():  # half a seal
        sql(f"UPDATE {TABLE} SET seq = 1 WHERE id = %s", [event.pk])
    audit_seal()
    with refused, transaction.atomic():  # a second seal
        sql(f"UPDATE {TABLE} SET seq = 9, hash = %s WHERE id = %s", ["b" * 64, event.pk])
    with refused, transaction.atomic():  # clearing the seal
        sql(
            f"UPDATE {TABLE} SET seq = NULL, prev_hash = NULL, hash = NULL WHERE id = %s",
            [event.pk],
        )
    assert audit_verify() == 1


@pytest.mark.django_db
def test_an_event_inserted_below_the_sealed_chain_is_named():
    (first,) = append(1)
    unsealed_event(id=first.pk + 5, action="sealer.later")
    if connection.vendor == "postgresql":  # the horizon is the sequence: move it past the id
        sql("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [TABLE, first.pk + 5])
    audit_seal()
    assert AuditEvent.objects.get(pk=first.pk + 5).seq == 2
    unsealed_event(id=first.pk + 2, action="sealer.sneaked")
    assert audit_seal().sealed == 0  # never sealed: it is below the head
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify()
    assert broken.value.seq == 2
    assert f"id {first.pk + 2}, sealer.sneaked" in broken.value.message
    assert "inserted below the sealed chain" in broken.value.message


@pytest.mark.django_db
def test_events_sealed_out_of_id_order_are_named(audit_guard_lifted):
    """Seals that link and hash correctly, head moved, but in another order than the ids:
    the log was reordered (the sealer only ever seals in id order)."""
    first, second = append(2)
    prev = "0" * 64
    for seq, event in enumerate([second, first], start=1):
        fields = {
            "seq": seq,
            "created_at": event.created_at,
            "actor_id": None,
            "actor_name": event.actor_name,
            "action": event.action,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "payload": event.payload,
        }
        digest = event_hash(prev_hash=prev, **fields)
        sql(
            f"UPDATE {TABLE} SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [seq, prev, digest, event.pk],
        )
        prev = digest
    AuditHead.objects.create(pk=1, seq=2, hash=prev)
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify()
    assert broken.value.seq == 2 and "out of order" in broken.value.message


@pytest.mark.django_db
def test_it_verifies_incrementally_from_a_head(django_assert_max_num_queries):
    append(5)
    audit_seal()
    head = AuditHead.objects.get()
    anchor = (head.seq, head.hash)
    append(3, start=6)
    done = audit_verify_since(seq=anchor[0], head_hash=anchor[1])
    assert (done.events, done.checked) == (8, 3)
    # It reads the events after the head, not the log: a handful of queries whatever its size.
    with django_assert_max_num_queries(12):
        audit_verify_since(seq=anchor[0], head_hash=anchor[1])


@pytest.mark.django_db
def test_incremental_verification_names_a_change_after_the_head(audit_guard_lifted):
    append(5)
    audit_seal()
    head = AuditHead.objects.get()
    append(3, start=6)
    audit_seal()
    AuditEvent.objects.filter(seq=7).update(action="tampered")
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify_since(seq=head.seq, head_hash=head.hash)
    assert broken.value.seq == 7
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify_since(seq=4, head_hash="ab" * 32)
    assert broken.value.seq == 4 and "rewritten" in broken.value.message


@pytest.mark.django_db
def test_verify_audit_reports_the_seal_and_verifies_since_a_head(capsys):
    append(3)
    call_command("verify_audit")
    out = capsys.readouterr().out
    head = AuditHead.objects.get()
    assert "3 events verified" in out
    assert f"sealed through event #3: 3:{head.hash}" in out
    assert "waiting for their seal: 0 events" in out
    append(2, start=4)
    call_command("verify_audit", since=f"3:{head.hash}")
    out = capsys.readouterr().out
    assert "2 events verified after the head #3 (the chain holds 5 events)" in out


@pytest.mark.django_db
def test_verify_audit_fails_when_events_wait_past_the_lag(settings, monkeypatch, capsys):
    """Appenders still running keep newer events from being sealed (the horizon); once the
    oldest has waited longer than AUDIT_SEAL_LAG_SECONDS, verify_audit fails."""
    settings.AUDIT_SEAL_LAG_SECONDS = 30
    append(2)
    audit_seal()
    monkeypatch.setattr(sealer_module, "_horizon", lambda wait_seconds: -1)
    unsealed_event(created_at=timezone.now() - timedelta(seconds=5))
    call_command("verify_audit")  # within the lag: fine, and said
    assert "waiting for their seal: 1 events, oldest 5." in capsys.readouterr().out
    unsealed_event(created_at=timezone.now() - timedelta(seconds=3))
    settings.AUDIT_SEAL_LAG_SECONDS = 2
    with pytest.raises(CommandError, match=r"audit sealing OVERDUE: 2 events unsealed"):
        call_command("verify_audit")
    status = audit_sealing_status()
    assert status.overdue and status.sealed_seq == 2 and status.unsealed == 2


@pytest.mark.django_db
def test_the_api_and_the_page_show_how_far_the_chain_is_sealed(api, personas, client):
    append(2)
    answer = api(personas["auditor"]).get("/api/audit/verify/").json()
    assert answer["ok"] is True and answer["sealed_seq"] == 2 and answer["unsealed"] == 0
    assert answer["sealing_overdue"] is False and answer["seal_lag_limit_seconds"] > 0
    client.force_login(personas["auditor"])
    html = client.get("/training/audit/verify/").content.decode()
    assert "Sealed through" in html and "event #2" in html
    assert "Waiting for their seal" in html


@pytest.mark.django_db
def test_the_maintenance_pass_seals():
    append(3)
    done = maintenance_once()
    assert done["audit_seal"] == 3
    assert AuditHead.objects.get().seq == 3


@pytest.mark.django_db
def test_a_tampered_head_stops_the_sealer_and_verify_names_it():
    append(2)
    audit_seal()
    AuditHead.objects.filter(pk=1).update(hash="e" * 64)
    append(1, start=3)
    result = audit_seal()
    assert result.sealed == 0 and "does not match" in result.refused
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify()
    assert broken.value.seq == 2 and "head" in broken.value.message


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_smaller_id_committing_after_a_larger_one_is_sealed_in_id_order():
    """A takes the smaller id and stays open; B appends a larger id and commits without waiting
    for A (no lock between appenders). The sealer must not seal B's event before A's: it waits
    for A, and once A commits both are sealed in id order."""
    a_appended, a_may_commit = threading.Event(), threading.Event()
    ids: dict[str, int] = {}
    errors: list[BaseException] = []

    def writer_a():
        try:
            with transaction.atomic():
                ids["a"] = audit_append(
                    actor=None, action="sealer.a", object_type="thing", object_id="a"
                ).pk
                a_appended.set()
                assert a_may_commit.wait(30)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
            a_appended.set()
        finally:
            connection.close()

    def writer_b():
        try:
            with transaction.atomic():
                ids["b"] = audit_append(
                    actor=None, action="sealer.b", object_type="thing", object_id="b"
                ).pk
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    a = threading.Thread(target=writer_a)
    a.start()
    assert a_appended.wait(30)
    b = threading.Thread(target=writer_b)
    b.start()
    b.join(30)
    assert not b.is_alive(), "B waited for A: appenders must not serialise"
    assert not errors, errors
    assert ids["a"] < ids["b"]

    held_back = audit_seal(wait_seconds=0.3)
    assert held_back.waiting and held_back.sealed == 0
    assert AuditEvent.objects.get(pk=ids["b"]).seq is None  # committed, but not sealed past A

    a_may_commit.set()
    a.join(30)
    assert not errors, errors
    assert audit_seal().sealed == 2
    sealed = list(AuditEvent.objects.order_by("seq").values_list("pk", "seq"))
    assert sealed == [(ids["a"], 1), (ids["b"], 2)]
    assert audit_verify() == 2
