from django.apps import AppConfig

_VIEW = [
    "governance.view_channel",
    "governance.view_signoffrequest",
    "governance.view_approval",
    "governance.view_deployment",
    "governance.view_regressioncase",
]


class GovernanceConfig(AppConfig):
    """Sign-off requests and decisions, the policy and regression gate, channels, deployment and
    rollback, compliance reports and lineage."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "governance"
    verbose_name = "Governance"
    # Merged by `manage.py bootstrap_roles`. Sign-off and deployment are checked by role (and
    # separation of duties) in the services; these permissions name the rights for the admin
    # and for reporting.
    role_permissions: dict[str, list[str]] = {
        "ml_engineer": list(_VIEW),
        "approver": [*_VIEW, "governance.approve_model_version"],
        "deployer": [*_VIEW, "governance.deploy_channel"],
        "auditor": list(_VIEW),
        "admin": list(_VIEW),
    }

    def ready(self) -> None:
        from governance.home_selectors import governance_home_sections
        from governance.selectors import regression_rows
        from reviews.home_selectors import home_section_provider
        from training_app.services.evaluations import evaluation_rows_source

        home_section_provider(governance_home_sections)
        evaluation_rows_source(split="regression", rows=regression_rows)
