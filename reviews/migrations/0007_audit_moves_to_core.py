"""The audit log now lives in core (core 0001): reviews drops it from its state; no table
changes (the append-only triggers stay on reviews_auditevent)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_initial"),
        ("reviews", "0006_audit_event_append_only"),
    ]

    operations = [
        # The tables stay where they are (db_table pins): only Django's model state moves.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name="auditevent",
                    name="actor",
                ),
                migrations.DeleteModel(
                    name="AuditHead",
                ),
                migrations.DeleteModel(
                    name="AuditEvent",
                ),
            ],
        ),
    ]
