from django.apps import AppConfig

_VIEW = [
    "training_app.view_basemodel",
    "training_app.view_trainingrun",
    "training_app.view_modelversion",
    "training_app.view_evaluation",
    "training_app.view_channel",
    "training_app.view_signoffrequest",
    "training_app.view_approval",
    "training_app.view_deployment",
    "training_app.view_regressioncase",
    "training_app.view_driftalert",
    "training_app.view_channelmonitoring",
]


class TrainingAppConfig(AppConfig):
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
        # Sign-off and deployment are checked by role (and separation of duties) in the
        # services; these permissions name the rights for the admin and for reporting.
        "approver": [*_VIEW, "training_app.approve_model_version"],
        "deployer": [*_VIEW, "training_app.deploy_channel"],
        "auditor": list(_VIEW),
        "admin": [
            *_VIEW,
            "training_app.launch_training",
            "training_app.evaluate_model_version",
            "training_app.add_basemodel",
            # Monitoring (issue 7): webhooks and their delivery log are the admins' alone.
            "training_app.view_webhook",
            "training_app.view_webhookdelivery",
        ],
    }

    def ready(self) -> None:
        from reviews.home_selectors import home_section_provider

        from .home_selectors import governance_home_sections

        home_section_provider(governance_home_sections)
