from django.apps import AppConfig


class TrainingAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "training_app"
    verbose_name = "Training"
    role_permissions: dict[str, list[str]] = {}
