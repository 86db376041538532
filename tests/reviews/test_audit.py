import itertools

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from core.audit import audit_append, audit_seal, audit_verify
from core.errors import AuditChainBroken
from core.models import AuditEvent, AuditHead

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _sealing_as_in_production(settings):
    """The test settings seal inline for the rest of the suite; these tests seal as production
    does: appended unsealed, sealed by audit_seal (core/audit/sealer.py)."""
    settings.AUDIT_SEALING = "deferred"


@pytest.fixture
def chain(personas):
    with transaction.atomic():
        for n in range(5):
            audit_append(
                actor=personas["admin"],
                action="test.event",
                object_type="thing",
                object_id=n,
                payload={"n": n, "text": "é ünïcode", "nested": {"b": 1}},
            )
    audit_seal()  # events are sealed after they commit; the tampering below is of sealed ones
    return list(AuditEvent.objects.order_by("seq"))


def test_events_link_by_hash(chain):
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == "0" * 64
    for before, after in itertools.pairwise(chain):
        assert after.prev_hash == before.hash
    assert AuditHead.objects.get().hash == chain[-1].hash
    assert audit_verify() == 5


@pytest.mark.django_db(transaction=True)
def test_append_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError):
        audit_append(actor=None, action="x", object_type="y", object_id=1)


def test_an_edited_payload_is_caught_at_that_event(chain, audit_guard_lifted):
    AuditEvent.objects.filter(seq=3).update(payload={"n": 99})
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify()
    assert broken.value.seq == 3


def test_an_edited_row_with_recomputed_hash_breaks_the_next_link(chain, audit_guard_lifted):
    AuditEvent.objects.filter(seq=2).update(hash="f" * 64)
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify()
    assert broken.value.seq == 2


def test_a_deleted_event_is_caught(chain, audit_guard_lifted):
    AuditEvent.objects.filter(seq=3).delete()
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify()
    assert broken.value.seq == 3


def test_a_truncated_tail_is_caught_by_the_published_head(chain, audit_guard_lifted):
    AuditEvent.objects.filter(seq__gte=4).delete()
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify()
    assert broken.value.seq == 4
    assert "tail" in broken.value.message


def test_reordered_events_are_caught(chain, audit_guard_lifted):
    # Swap two rows' contents in SQL, keeping sequence numbers.
    a, b = chain[1], chain[2]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE reviews_auditevent SET seq = -1 WHERE seq = %s", [a.seq])
        cursor.execute("UPDATE reviews_auditevent SET seq = %s WHERE seq = %s", [a.seq, b.seq])
        cursor.execute("UPDATE reviews_auditevent SET seq = %s WHERE seq = -1", [b.seq])
    with pytest.raises(AuditChainBroken) as broken:
        audit_verify()
    assert broken.value.seq == 2


def test_verify_audit_command_exits_non_zero_naming_the_event(chain, audit_guard_lifted, capsys):
    call_command("verify_audit")
    assert "5 events verified" in capsys.readouterr().out
    AuditEvent.objects.filter(seq=4).update(action="tampered")
    with pytest.raises(CommandError, match="#4"):
        call_command("verify_audit")


def test_the_admin_offers_no_way_to_change_events(chain, personas, client):
    admin = personas["admin"]
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    url = f"/admin/core/auditevent/{chain[0].pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    client.post(url, {"action": "edited"})
    assert client.post(f"/admin/core/auditevent/{chain[0].pk}/delete/").status_code == 403
    assert AuditEvent.objects.count() == 5
    assert audit_verify() == 5
