"""Lifting the audit log's append-only triggers (reviews migration 0006) the way the table
owner does it (docs/operations.md, "Legal erasure"): for a scratch database that a benchmark
empties, for the test suite's flushes, and for tests that play someone with the owner's rights
tampering with the log anyway. It needs the owner's rights: the application's own user, in the
documented set-up without them, is refused."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection as default_connection
from django.db import transaction

TABLE = "reviews_auditevent"


def guard_statements(connection) -> tuple[list[str], list[str]]:
    """The statements that lift the triggers guarding the audit table now, and those that put
    them back (none when the table or its triggers are missing, as before migrating)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
                "AND NOT tgisinternal AND tgenabled <> 'D' ORDER BY tgname",
                [TABLE],
            )
            names = [name for (name,) in cursor.fetchall()]
            return (
                [f"ALTER TABLE {TABLE} DISABLE TRIGGER {name}" for name in names],
                [f"ALTER TABLE {TABLE} ENABLE TRIGGER {name}" for name in names],
            )
        # SQLite cannot disable a trigger: drop it and create it again from its stored text.
        cursor.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s "
            "ORDER BY name",
            [TABLE],
        )
        triggers = cursor.fetchall()
        return [f"DROP TRIGGER {name}" for name, _ in triggers], [sql for _, sql in triggers]


def run_deferred_checks(connection=default_connection) -> None:
    """Inside a test's transaction the audit events just written leave deferred foreign-key
    checks pending, and PostgreSQL refuses ALTER TABLE or TRUNCATE of a table with pending
    trigger events. Running them now leaves the table as an operator's fresh transaction finds
    it (Django's check_constraints: SET CONSTRAINTS ALL IMMEDIATE, then DEFERRED again)."""
    if connection.vendor == "postgresql":
        connection.check_constraints()


@contextmanager
def lift_audit_guard(connection=default_connection) -> Iterator[None]:
    """Inside: the audit table takes UPDATE, DELETE (and TRUNCATE). In one transaction, so a
    failure anywhere leaves the guard in place."""
    lift, restore = guard_statements(connection)
    with transaction.atomic(using=connection.alias):
        run_deferred_checks(connection)
        _execute(connection, lift)
        yield
        run_deferred_checks(connection)
        _execute(connection, restore)


def _execute(connection, statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
