"""Tampering with the audit log in raw SQL, the way someone with the table owner's rights would,
on SQLite and PostgreSQL alike: after lifting the log's append-only guard, which refuses these
statements from the application (tests/reviews/test_audit_append_only.py). `manage.py
verify_audit` must exit non-zero and name the first bad event in each case, and must pass the
untouched chain (and a change that only rewrites how the same JSON is stored).

tests/reviews/test_audit.py covers the service through the ORM; here every change is a plain
SQL statement, the command runs as `manage.py` runs it (exit code included), and the API's
verify endpoint must agree with it.
"""

import json

import pytest
from django.core.management import CommandError, call_command
from django.db import DataError, IntegrityError, connection, transaction

from core.audit import audit_append, audit_seal
from core.audit.chain import event_hash
from core.models import AuditEvent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_guard_lifted")]

EVENTS = 6
TABLE = AuditEvent._meta.db_table
HEAD = "reviews_audithead"


@pytest.fixture(autouse=True)
def _sealing_as_in_production(settings):
    """The test settings seal inline for the rest of the suite; these tests seal as production
    does: appended unsealed, sealed by audit_seal (core/audit/sealer.py)."""
    settings.AUDIT_SEALING = "deferred"


@pytest.fixture
def chain(personas):
    with transaction.atomic():
        for n in range(1, EVENTS + 1):
            audit_append(
                actor=personas["admin"] if n % 2 else None,
                action="tamper.test",
                object_type="thing",
                object_id=n,
                payload={"n": n, "text": "é ünïcode ✓", "nested": {"b": [1, 2.5, None]}},
            )
    audit_seal()  # events are sealed after they commit; the tampering below is of sealed ones
    return list(AuditEvent.objects.order_by("seq"))


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, list(params))
        return cursor.rowcount


def set_payload(seq: int, text: str) -> None:
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    assert sql(f"UPDATE {TABLE} SET payload = %s{cast} WHERE seq = %s", [text, seq]) == 1


def verify_command(capsys) -> tuple[int, str]:
    """Run `verify_audit` as `manage.py` would and return its exit code and output.
    (run_from_argv itself closes every connection, which would end the test's database: the
    exit code is the CommandError's returncode, exactly what run_from_argv passes to exit.)"""
    code = 0
    try:
        call_command("verify_audit")
    except CommandError as error:
        code = error.returncode
        print(f"CommandError: {error}")
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_broken_at(capsys, api, personas, seq: int, words: str = "") -> str:
    code, output = verify_command(capsys)
    assert code != 0, output
    assert f"BROKEN at event #{seq}:" in output, output
    assert words in output
    answer = api(personas["auditor"]).get("/api/audit/verify/").json()
    assert answer["ok"] is False and answer["broken_at"] == seq, answer
    return output


def test_the_untouched_chain_verifies(chain, capsys):
    code, output = verify_command(capsys)
    assert code == 0 and f"{EVENTS} events verified" in output


def test_the_same_json_stored_differently_still_verifies(chain, capsys):
    """Key order and whitespace are storage details, not tampering (jsonb reorders keys on
    PostgreSQL anyway)."""
    stored = chain[2].payload
    reordered = dict(reversed(list(stored.items())))
    set_payload(3, json.dumps(reordered, indent=4, ensure_ascii=True))
    assert AuditEvent.objects.get(seq=3).payload == stored
    code, output = verify_command(capsys)
    assert code == 0, output


def test_an_updated_payload_names_that_event(chain, capsys, api, personas):
    set_payload(3, json.dumps({"n": 3, "text": "é ünïcode ✓", "nested": {"b": [1, 2.5, 0]}}))
    assert_broken_at(capsys, api, personas, 3, "altered")


def test_a_payload_that_is_not_json_is_refused_by_the_database(chain, capsys):
    """SQLite's JSON_VALID check and PostgreSQL's jsonb both refuse it, so the verifier never
    has to read one."""
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        set_payload(4, "{not json")
    code, output = verify_command(capsys)
    assert code == 0, output


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("action", "tamper.quiet"),
        ("actor_name", "someone-else"),
        ("object_id", "999"),
        ("object_type", "other"),
    ],
)
def test_an_updated_column_names_that_event(chain, capsys, api, personas, column, value):
    assert sql(f"UPDATE {TABLE} SET {column} = %s WHERE seq = 2", [value]) == 1
    assert_broken_at(capsys, api, personas, 2, "altered")


def test_a_moved_timestamp_names_that_event(chain, capsys, api, personas):
    moved = chain[4].created_at.replace(microsecond=(chain[4].created_at.microsecond + 1) % 10**6)
    AuditEvent.objects.filter(seq=5).update(created_at=moved)  # the backend's own format
    assert_broken_at(capsys, api, personas, 5, "altered")


def test_a_reassigned_actor_names_that_event(chain, capsys, api, personas):
    other = personas["reviewer"].pk
    assert sql(f"UPDATE {TABLE} SET actor_id = %s WHERE seq = 1", [other]) == 1
    assert_broken_at(capsys, api, personas, 1, "altered")


@pytest.mark.parametrize("seq", [1, 3, EVENTS - 1])
def test_a_deleted_row_names_the_missing_event(chain, capsys, api, personas, seq):
    assert sql(f"DELETE FROM {TABLE} WHERE seq = %s", [seq]) == 1
    assert_broken_at(capsys, api, personas, seq, "missing")


def test_swapped_sequence_numbers_name_the_first_of_the_two(chain, capsys, api, personas):
    sql(f"UPDATE {TABLE} SET seq = -1 WHERE seq = 4")
    sql(f"UPDATE {TABLE} SET seq = 4 WHERE seq = 5")
    sql(f"UPDATE {TABLE} SET seq = 5 WHERE seq = -1")
    assert_broken_at(capsys, api, personas, 4)


def test_swapped_rows_keeping_their_numbers_name_the_first_of_the_two(chain, capsys, api, personas):
    """Every column but the id and seq swapped: each row still carries a valid hash for what it
    holds, but it no longer links to its predecessor."""
    columns = ["created_at", "actor_id", "actor_name", "action", "object_type", "object_id"]
    columns += ["payload", "prev_hash", "hash"]
    a, b = chain[1], chain[2]
    rows = {
        e.seq: [getattr(e, c) if c != "payload" else json.dumps(e.payload) for c in columns]
        for e in (a, b)
    }
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    assignments = ", ".join(f"{c} = %s{cast if c == 'payload' else ''}" for c in columns)
    # Unique hashes: park one row's hash first.
    sql(f"UPDATE {TABLE} SET hash = %s WHERE seq = %s", ["parked", a.seq])
    sql(f"UPDATE {TABLE} SET {assignments} WHERE seq = %s", [*rows[a.seq], b.seq])
    sql(f"UPDATE {TABLE} SET {assignments} WHERE seq = %s", [*rows[b.seq], a.seq])
    assert_broken_at(capsys, api, personas, a.seq)


@pytest.mark.parametrize("removed", [1, 2, EVENTS])
def test_a_deleted_tail_is_caught_by_the_published_head(chain, capsys, api, personas, removed):
    first_gone = EVENTS - removed + 1
    assert sql(f"DELETE FROM {TABLE} WHERE seq >= %s", [first_gone]) == removed
    assert_broken_at(capsys, api, personas, first_gone, "tail")


def test_an_altered_head_is_caught(chain, capsys, api, personas):
    assert sql(f"UPDATE {HEAD} SET hash = %s WHERE id = 1", ["e" * 64]) == 1
    assert_broken_at(capsys, api, personas, EVENTS, "head")


def test_a_forged_event_appended_without_the_head_names_it(chain, capsys, api, personas):
    """A row added at the end, correctly linked and hashed, but the published head not moved:
    the forged event is the bad one, not the last genuine one."""
    last = chain[-1]
    fields = {
        "seq": EVENTS + 1,
        "created_at": last.created_at,
        "actor_id": None,
        "actor_name": "system",
        "action": "tamper.forged",
        "object_type": "thing",
        "object_id": "forged",
        "payload": {},
    }
    AuditEvent.objects.create(
        **fields, prev_hash=last.hash, hash=event_hash(prev_hash=last.hash, **fields)
    )
    assert_broken_at(capsys, api, personas, EVENTS + 1, "head")


def test_a_row_rewritten_with_its_own_hash_recomputed_names_that_row(chain, capsys, api, personas):
    """The attacker changes event #3 and recomputes its hash (but cannot rewrite every later
    event): #4 still links to the old #3, and the verifier must blame #3, not #4."""
    victim = chain[2]
    fields = {
        "seq": victim.seq,
        "created_at": victim.created_at,
        "actor_id": victim.actor_id,
        "actor_name": victim.actor_name,
        "action": "tamper.rewritten",
        "object_type": victim.object_type,
        "object_id": victim.object_id,
        "payload": victim.payload,
    }
    forged = event_hash(prev_hash=victim.prev_hash, **fields)
    assert (
        sql(
            f"UPDATE {TABLE} SET action = %s, hash = %s WHERE seq = %s",
            ["tamper.rewritten", forged, victim.seq],
        )
        == 1
    )
    assert_broken_at(capsys, api, personas, victim.seq)


def test_only_the_first_of_several_tamperings_is_named(chain, capsys, api, personas):
    set_payload(5, json.dumps({"n": 50}))
    sql(f"DELETE FROM {TABLE} WHERE seq = 6")
    set_payload(2, json.dumps({"n": 20}))
    assert_broken_at(capsys, api, personas, 2)
