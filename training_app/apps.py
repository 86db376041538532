from django.apps import AppConfig

_VIEW = [
    "training_app.view_basemodel",
    "training_app.view_trainingrun",
    "training_app.view_modelversion",
    "training_app.view_evaluation",
]


class TrainingAppConfig(AppConfig):
    """Training runs, model versions and their evaluations; the Django-free trainer lives in
    `training_app.training`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "training_app"
    verbose_name = "Training"
    # Merged by `manage.py bootstrap_roles`. Launching is checked by role in the services too.
    role_permissions: dict[str, list[str]] = {
        "ml_engineer": [
            *_VIEW,
            "training_app.launch_training",
            "training_app.evaluate_model_version",
        ],
        "approver": list(_VIEW),
        "deployer": list(_VIEW),
        "auditor": list(_VIEW),
        "admin": [
            *_VIEW,
            "training_app.launch_training",
            "training_app.evaluate_model_version",
            "training_app.add_basemodel",
        ],
    }

    def ready(self) -> None:
        from core.maintenance import maintenance_step
        from training_app.services import training_runs_sweep
        from training_app.services.evaluations import evaluations_sweep

        maintenance_step(key="runs", order=10, label="training runs", run=training_runs_sweep)
        maintenance_step(key="evaluations", order=20, label="evaluations", run=evaluations_sweep)
