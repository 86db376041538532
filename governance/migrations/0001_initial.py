"""Channels, sign-off and deployments move from training_app to governance: state only."""

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
        "governance",
        ["channel", "regressioncase", "signoffrequest", "approval", "deployment"],
    )


def move_content_types_back(apps, schema_editor):
    _move_content_types(
        apps,
        "governance",
        "training_app",
        ["channel", "regressioncase", "signoffrequest", "approval", "deployment"],
    )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("training_app", "0008_channel_try_enqueued_at"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # The tables stay where they are (db_table pins): only Django's model state moves.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Channel",
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
                        ("name", models.SlugField(max_length=64, unique=True)),
                        ("description", models.CharField(blank=True, max_length=300)),
                        (
                            "policy",
                            models.JSONField(
                                blank=True, default=dict, help_text="Overrides of the default."
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "live_version",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="live_on",
                                to="training_app.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_channel",
                        "ordering": ["name"],
                        "permissions": [
                            ("deploy_channel", "Can deploy and roll back channels"),
                            ("approve_model_version", "Can sign off model versions"),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="Deployment",
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
                            "action",
                            models.CharField(
                                choices=[
                                    ("deploy", "Deploy"),
                                    ("rollback", "Rollback"),
                                    ("withdraw", "Taken offline"),
                                ],
                                max_length=16,
                            ),
                        ),
                        (
                            "manifest_digest",
                            models.CharField(help_text="Verified adapter manifest.", max_length=64),
                        ),
                        ("comment", models.TextField(blank=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "actor",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="deployments",
                                to="governance.channel",
                            ),
                        ),
                        (
                            "previous",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="governance.deployment",
                            ),
                        ),
                        (
                            "replaced",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="training_app.modelversion",
                            ),
                        ),
                        (
                            "version",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="deployments",
                                to="training_app.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_deployment",
                        "ordering": ["-created_at", "-id"],
                    },
                ),
                migrations.AddField(
                    model_name="channel",
                    name="live_deployment",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.deployment",
                    ),
                ),
                migrations.CreateModel(
                    name="RegressionCase",
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
                        ("position", models.PositiveIntegerField(default=0)),
                        ("prompt", models.TextField()),
                        ("reference", models.TextField()),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="regression_cases",
                                to="governance.channel",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_regressioncase",
                        "ordering": ["channel", "position", "id"],
                    },
                ),
                migrations.CreateModel(
                    name="SignoffRequest",
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
                            "status",
                            models.CharField(
                                choices=[
                                    ("open", "Open"),
                                    ("approved", "Approved"),
                                    ("rejected", "Rejected"),
                                ],
                                default="open",
                                max_length=16,
                            ),
                        ),
                        (
                            "policy",
                            models.JSONField(
                                default=dict, help_text="The channel's policy when requested."
                            ),
                        ),
                        ("comment", models.TextField(blank=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("decided_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="signoff_requests",
                                to="governance.channel",
                            ),
                        ),
                        (
                            "live_version",
                            models.ForeignKey(
                                blank=True,
                                help_text="The version live on the channel when requested (the gate compares with it).",
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="training_app.modelversion",
                            ),
                        ),
                        (
                            "requested_by",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "version",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="signoff_requests",
                                to="training_app.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_signoffrequest",
                        "ordering": ["-created_at"],
                    },
                ),
                migrations.CreateModel(
                    name="Approval",
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
                            "decision",
                            models.CharField(
                                choices=[("approve", "Approve"), ("reject", "Reject")],
                                max_length=16,
                            ),
                        ),
                        ("comment", models.TextField()),
                        ("override", models.BooleanField(default=False)),
                        ("override_reason", models.TextField(blank=True)),
                        (
                            "gate",
                            models.JSONField(
                                default=dict, help_text="The regression gate's result at decision."
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "approver",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "request",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="approvals",
                                to="governance.signoffrequest",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_app_approval",
                        "ordering": ["created_at"],
                    },
                ),
                migrations.AddConstraint(
                    model_name="signoffrequest",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("status", "open")),
                        fields=("version",),
                        name="one_open_signoff_per_version",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="approval",
                    constraint=models.UniqueConstraint(
                        fields=("request", "approver"), name="one_decision_per_approver"
                    ),
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
