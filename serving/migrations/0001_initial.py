"""Serving's models move from training_app to serving: state only."""

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def _move_content_types(apps, from_app, to_app, models):
    """Permissions and admin history hang off content types: rename them in place so the role
    groups keep their permissions (now under the new app label)."""
    content_type = apps.get_model("contenttypes", "ContentType")
    for model in models:
        if not content_type.objects.filter(app_label=to_app, model=model).exists():
            content_type.objects.filter(app_label=from_app, model=model).update(app_label=to_app)


def move_content_types(apps, schema_editor):
    _move_content_types(apps, "training_app", "serving", ["channeltry"])


def move_content_types_back(apps, schema_editor):
    _move_content_types(apps, "serving", "training_app", ["channeltry"])


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("governance", "0001_initial"),
        ("reviews", "0006_audit_event_append_only"),
        ("training_app", "0008_channel_try_enqueued_at"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # The tables stay where they are (db_table pins): only Django's model state moves.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ChannelTry",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=uuid.uuid4,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("question", models.TextField()),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("queued", "Queued"),
                                    ("running", "Running"),
                                    ("done", "Done"),
                                    ("failed", "Failed"),
                                ],
                                default="queued",
                                max_length=16,
                            ),
                        ),
                        ("error", models.TextField(blank=True)),
                        ("message_id", models.CharField(blank=True, max_length=64)),
                        (
                            "enqueued_at",
                            models.DateTimeField(
                                blank=True,
                                help_text="When its message was last sent (the sweep resends).",
                                null=True,
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="tries",
                                to="governance.channel",
                            ),
                        ),
                        (
                            "output",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="reviews.output",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="channel_tries",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "version",
                            models.ForeignKey(
                                help_text="Live when asked; the version that answered once done.",
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="training_app.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_channeltry",
                        "ordering": ["-created_at"],
                        "indexes": [
                            models.Index(
                                fields=["channel", "user", "-created_at"], name="channel_try_mine"
                            )
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
