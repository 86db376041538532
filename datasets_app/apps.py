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

    def ready(self) -> None:
        from core.maintenance import maintenance_step
        from datasets_app.services import dataset_builds_recover, examples_sync

        maintenance_step(
            key="dataset_builds", order=30, label="dataset builds", run=dataset_builds_recover
        )
        # Reviewed outputs become examples here too, so a build only syncs what arrived since.
        maintenance_step(
            key="examples_synced",
            order=50,
            label="{n} reviewed outputs became examples",
            run=lambda: examples_sync().created,
        )
