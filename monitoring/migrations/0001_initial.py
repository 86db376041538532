"""Monitoring's models move from training_app to monitoring: state only."""

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
    _move_content_types(
        apps,
        "training_app",
        "monitoring",
        ["channelmonitoring", "driftalert", "webhook", "webhookdelivery"],
    )


def move_content_types_back(apps, schema_editor):
    _move_content_types(
        apps,
        "monitoring",
        "training_app",
        ["channelmonitoring", "driftalert", "webhook", "webhookdelivery"],
    )


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
                    name="ChannelMonitoring",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("audit_sample_rate", models.FloatField(default=0.0)),
                        (
                            "margin",
                            models.FloatField(
                                blank=True, help_text="Empty: the default margin.", null=True
                            ),
                        ),
                        ("min_samples", models.PositiveIntegerField(blank=True, null=True)),
                        (
                            "baseline",
                            models.JSONField(
                                blank=True,
                                default=dict,
                                help_text="{correction|rejection: rate} overriding the default.",
                            ),
                        ),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "accept_rule",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="reviews.routingrule",
                            ),
                        ),
                        (
                            "audit_queue",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="reviews.queue",
                            ),
                        ),
                        (
                            "audit_rule",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="reviews.routingrule",
                            ),
                        ),
                        (
                            "channel",
                            models.OneToOneField(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="monitoring",
                                to="governance.channel",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_channelmonitoring",
                    },
                ),
                migrations.CreateModel(
                    name="Webhook",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("name", models.CharField(max_length=100, unique=True)),
                        ("url", models.URLField(max_length=500)),
                        ("secret", models.CharField(max_length=128)),
                        (
                            "events",
                            models.JSONField(default=list, help_text="Event names; empty: none."),
                        ),
                        ("is_active", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_webhook",
                        "ordering": ["name"],
                    },
                ),
                migrations.CreateModel(
                    name="DriftAlert",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "metric",
                            models.CharField(
                                choices=[
                                    ("correction", "Correction rate"),
                                    ("rejection", "Rejection rate"),
                                ],
                                max_length=16,
                            ),
                        ),
                        (
                            "status",
                            models.CharField(
                                choices=[("open", "Open"), ("acknowledged", "Acknowledged")],
                                default="open",
                                max_length=16,
                            ),
                        ),
                        ("baseline", models.FloatField()),
                        ("baseline_source", models.CharField(max_length=32)),
                        ("observed", models.FloatField()),
                        ("ci_low", models.FloatField()),
                        ("ci_high", models.FloatField()),
                        ("margin", models.FloatField()),
                        ("samples", models.PositiveIntegerField()),
                        ("window_start", models.DateTimeField()),
                        ("raised_at", models.DateTimeField(auto_now_add=True)),
                        ("acknowledged_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "acknowledged_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="drift_alerts",
                                to="governance.channel",
                            ),
                        ),
                        (
                            "retrain_run",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="training_app.trainingrun",
                            ),
                        ),
                        (
                            "version",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="drift_alerts",
                                to="training_app.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_driftalert",
                        "ordering": ["-raised_at", "-id"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("version", "channel", "metric"),
                                name="one_drift_alert_per_metric",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="WebhookDelivery",
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
                        ("event", models.CharField(max_length=64)),
                        ("payload", models.JSONField(default=dict)),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("pending", "Pending"),
                                    ("delivered", "Delivered"),
                                    ("failed", "Failed"),
                                ],
                                default="pending",
                                max_length=16,
                            ),
                        ),
                        ("attempts", models.PositiveIntegerField(default=0)),
                        ("next_attempt_at", models.DateTimeField()),
                        ("last_status_code", models.PositiveIntegerField(blank=True, null=True)),
                        ("last_error", models.TextField(blank=True)),
                        (
                            "log",
                            models.JSONField(
                                blank=True, default=list, help_text="[{at, status_code, error}]"
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("delivered_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "webhook",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="deliveries",
                                to="monitoring.webhook",
                            ),
                        ),
                    ],
                    options={
                        "verbose_name_plural": "webhook deliveries",
                        "db_table": "training_app_webhookdelivery",
                        "ordering": ["-created_at"],
                        "indexes": [
                            models.Index(fields=["status", "next_attempt_at"], name="webhook_due")
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
