from django.apps import AppConfig


class DatasetsAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "datasets_app"
    verbose_name = "Datasets"
    # Merged into the role groups by `manage.py bootstrap_roles`. Views check roles
    # (core.permissions: datasets.build / datasets.read); these permissions mirror them for the
    # admin.
    role_permissions: dict[str, list[str]] = {
        "ml_engineer": [
            "datasets_app.build_dataset",
            "datasets_app.view_datasetversion",
            "datasets_app.view_example",
        ],
        "admin": [
            "datasets_app.build_dataset",
            "datasets_app.view_datasetversion",
            "datasets_app.view_example",
        ],
        "auditor": ["datasets_app.view_datasetversion", "datasets_app.view_example"],
        "approver": ["datasets_app.view_datasetversion", "datasets_app.view_example"],
    }
