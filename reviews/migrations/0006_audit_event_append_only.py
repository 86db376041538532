"""Make the audit log append-only in the database itself.

Until now a plain UPDATE or DELETE of an audit event by the application's own database user
succeeded and was only caught later, by `verify_audit`. These triggers refuse it at once, on
whatever connection it comes from: the ORM, a shell, a script. Lifting them is an owner's act
(ALTER TABLE on PostgreSQL, DROP TRIGGER on SQLite) that docs/operations.md describes for a
legal erasure. AuditHead is left alone: every append moves the head.

On SQLite, a later migration that remakes reviews_auditevent (Django copies the table and drops
the old one) drops these triggers with it and must create them again; the append-only tests
would fail until it does.
"""

from django.db import migrations

TABLE = "reviews_auditevent"
REFUSAL = "audit events are append-only"
# The hint rides in the message itself: Django shows the message, not PostgreSQL's HINT field.
HINT = "a legal erasure is a procedure for the table owner, see docs/operations.md"

POSTGRESQL_FUNCTION = "reviews_auditevent_refuse_change"
POSTGRESQL_ROW_TRIGGER = "reviews_auditevent_append_only"
POSTGRESQL_TRUNCATE_TRIGGER = "reviews_auditevent_no_truncate"

POSTGRESQL_CREATE = [
    f"""
    CREATE FUNCTION {POSTGRESQL_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- integrity_constraint_violation, so that both databases raise an IntegrityError.
        RAISE EXCEPTION '{REFUSAL}: % on % refused ({HINT})', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END;
    $$
    """,
    f"""
    CREATE TRIGGER {POSTGRESQL_ROW_TRIGGER}
    BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {POSTGRESQL_FUNCTION}()
    """,
    # TRUNCATE fires no row triggers: it needs a statement-level one of its own.
    f"""
    CREATE TRIGGER {POSTGRESQL_TRUNCATE_TRIGGER}
    BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {POSTGRESQL_FUNCTION}()
    """,
]
POSTGRESQL_DROP = [
    f"DROP TRIGGER IF EXISTS {POSTGRESQL_TRUNCATE_TRIGGER} ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {POSTGRESQL_ROW_TRIGGER} ON {TABLE}",
    f"DROP FUNCTION IF EXISTS {POSTGRESQL_FUNCTION}()",
]

# SQLite has no TRUNCATE; a DELETE without WHERE skips its truncate shortcut when the table has
# a trigger, so the DELETE trigger covers it.
SQLITE_UPDATE_TRIGGER = "reviews_auditevent_no_update"
SQLITE_DELETE_TRIGGER = "reviews_auditevent_no_delete"
SQLITE_CREATE = [
    f"""CREATE TRIGGER {SQLITE_UPDATE_TRIGGER} BEFORE UPDATE ON {TABLE}
BEGIN
    SELECT RAISE(ABORT, '{REFUSAL}: UPDATE on {TABLE} refused ({HINT})');
END""",
    f"""CREATE TRIGGER {SQLITE_DELETE_TRIGGER} BEFORE DELETE ON {TABLE}
BEGIN
    SELECT RAISE(ABORT, '{REFUSAL}: DELETE on {TABLE} refused ({HINT})');
END""",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {SQLITE_DELETE_TRIGGER}",
    f"DROP TRIGGER IF EXISTS {SQLITE_UPDATE_TRIGGER}",
]

STATEMENTS = {
    "postgresql": (POSTGRESQL_CREATE, POSTGRESQL_DROP),
    "sqlite": (SQLITE_CREATE, SQLITE_DROP),
}


def _run(schema_editor, statements: list[str]) -> None:
    for statement in statements:
        # No parameters: the PL/pgSQL body's % placeholders must reach the server as they are.
        schema_editor.execute(statement, params=None)


def _unsupported(vendor: str) -> RuntimeError:
    # Signoff runs on SQLite or PostgreSQL only; a third database must not get a silently
    # rewritable audit log.
    return RuntimeError(f"no append-only guard for the audit log on {vendor}")


def create_guard(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise _unsupported(vendor)
    _run(schema_editor, STATEMENTS[vendor][0])


def drop_guard(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise _unsupported(vendor)
    _run(schema_editor, STATEMENTS[vendor][1])


class Migration(migrations.Migration):
    dependencies = [("reviews", "0005_output_lock_table")]

    operations = [migrations.RunPython(create_guard, drop_guard, elidable=False)]
