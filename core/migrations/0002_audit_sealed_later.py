"""Audit events are written unsealed and sealed later (docs/architecture.md, "The audit log at
database speed"): `seq`, `prev_hash` and `hash` may be empty until the sealer chains the event.

The append-only guard of reviews migration 0006 refused every UPDATE. It now lets exactly one
through per event: the seal, written once, from empty to set, with every other column unchanged.
Anything else (changing what an event says, resealing a sealed event, clearing a seal, DELETE,
TRUNCATE) is refused as before, with the same message and by triggers of the same names, so the
documented lift for a legal erasure (docs/operations.md) is unchanged on PostgreSQL.

On SQLite, making the three columns nullable remakes the table, which drops its triggers: this
migration creates them again, the UPDATE one with the seal-once condition. SQLite has no generic
row comparison, so that condition names every column: a later migration that adds a column to
reviews_auditevent must add it there too (it remakes the table and recreates the triggers anyway).
"""

from django.db import migrations, models

TABLE = "reviews_auditevent"
REFUSAL = "audit events are append-only"
HINT = "a legal erasure is a procedure for the table owner, see docs/operations.md"
SEAL_COLUMNS = ("seq", "prev_hash", "hash")
# Every column but the seal's: what the event says, which must never change.
CONTENT_COLUMNS = (
    "id",
    "created_at",
    "actor_id",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "payload",
)

POSTGRESQL_FUNCTION = "reviews_auditevent_refuse_change"
POSTGRESQL_ROW_TRIGGER = "reviews_auditevent_append_only"
POSTGRESQL_TRUNCATE_TRIGGER = "reviews_auditevent_no_truncate"

_SEAL_ONCE = " AND ".join(
    [f"OLD.{c} IS NULL" for c in SEAL_COLUMNS] + [f"NEW.{c} IS NOT NULL" for c in SEAL_COLUMNS]
)
# to_jsonb(row) minus the seal: also covers a column added later without touching this function.
_PG_SAME_CONTENT = (
    "(to_jsonb(NEW) - 'seq' - 'prev_hash' - 'hash') = "
    "(to_jsonb(OLD) - 'seq' - 'prev_hash' - 'hash')"
)

POSTGRESQL_SEAL_ONCE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {POSTGRESQL_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The one UPDATE allowed: the sealer writing an event's seal, once, changing nothing else.
    IF TG_OP = 'UPDATE' AND {_SEAL_ONCE} AND {_PG_SAME_CONTENT} THEN
        RETURN NEW;
    END IF;
    -- integrity_constraint_violation, so that both databases raise an IntegrityError.
    RAISE EXCEPTION '{REFUSAL}: % on % refused ({HINT})', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$
"""
POSTGRESQL_REFUSE_ALL_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {POSTGRESQL_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- integrity_constraint_violation, so that both databases raise an IntegrityError.
    RAISE EXCEPTION '{REFUSAL}: % on % refused ({HINT})', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$
"""

SQLITE_UPDATE_TRIGGER = "reviews_auditevent_no_update"
SQLITE_DELETE_TRIGGER = "reviews_auditevent_no_delete"
_SQLITE_SAME_CONTENT = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in CONTENT_COLUMNS)
SQLITE_CREATE = [
    f"""CREATE TRIGGER {SQLITE_UPDATE_TRIGGER} BEFORE UPDATE ON {TABLE}
WHEN NOT ({_SEAL_ONCE} AND {_SQLITE_SAME_CONTENT})
BEGIN
    SELECT RAISE(ABORT, '{REFUSAL}: UPDATE on {TABLE} refused ({HINT})');
END""",
    f"""CREATE TRIGGER {SQLITE_DELETE_TRIGGER} BEFORE DELETE ON {TABLE}
BEGIN
    SELECT RAISE(ABORT, '{REFUSAL}: DELETE on {TABLE} refused ({HINT})');
END""",
]
# What reviews migration 0006 created, for going back.
SQLITE_CREATE_BEFORE = [
    f"""CREATE TRIGGER {SQLITE_UPDATE_TRIGGER} BEFORE UPDATE ON {TABLE}
BEGIN
    SELECT RAISE(ABORT, '{REFUSAL}: UPDATE on {TABLE} refused ({HINT})');
END""",
    SQLITE_CREATE[1],
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {SQLITE_DELETE_TRIGGER}",
    f"DROP TRIGGER IF EXISTS {SQLITE_UPDATE_TRIGGER}",
]


def _run(schema_editor, statements: list[str]) -> None:
    for statement in statements:
        # No parameters: the PL/pgSQL body's % placeholders must reach the server as they are.
        schema_editor.execute(statement, params=None)


def _vendor(schema_editor) -> str:
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        # A third database must not get a silently rewritable audit log.
        raise RuntimeError(f"no append-only guard for the audit log on {vendor}")
    return vendor


def drop_sqlite_guard(apps, schema_editor):
    """Before the table is remade (SQLite): the triggers would go with the old table anyway."""
    if _vendor(schema_editor) == "sqlite":
        _run(schema_editor, SQLITE_DROP)


def create_seal_once_guard(apps, schema_editor):
    if _vendor(schema_editor) == "postgresql":
        _run(schema_editor, [POSTGRESQL_SEAL_ONCE_FUNCTION])
    else:
        _run(schema_editor, SQLITE_DROP + SQLITE_CREATE)


def restore_refuse_all_guard(apps, schema_editor):
    if _vendor(schema_editor) == "postgresql":
        _run(schema_editor, [POSTGRESQL_REFUSE_ALL_FUNCTION])
    else:
        _run(schema_editor, SQLITE_DROP + SQLITE_CREATE_BEFORE)


class Migration(migrations.Migration):
    # The remade SQLite table must never be without its guard between two statements.
    atomic = True

    dependencies = [("core", "0001_initial")]

    operations = [
        migrations.RunPython(drop_sqlite_guard, restore_refuse_all_guard, elidable=False),
        migrations.AlterField(
            model_name="auditevent",
            name="seq",
            field=models.BigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, max_length=64, null=True, unique=True),
        ),
        migrations.RunPython(create_seal_once_guard, drop_sqlite_guard, elidable=False),
    ]
