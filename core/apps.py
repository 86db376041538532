from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every other app builds on: errors, HTTP error answers, roles and the permission
    policy. The lowest layer: it imports no other app of the project."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "core"
    verbose_name = "Core"
