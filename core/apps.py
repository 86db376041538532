from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every other app builds on: errors, HTTP error answers, roles and the permission
    policy, the hash-chained audit log and its page. The lowest layer: it imports no other app
    of the project."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "core"
    verbose_name = "Core"
    # Merged by `manage.py bootstrap_roles`.
    role_permissions: dict[str, list[str]] = {
        "auditor": ["core.view_audit_log"],
        "admin": ["core.view_audit_log"],
    }

    def ready(self) -> None:
        from core.audit.sealer import audit_seal_step
        from core.maintenance import maintenance_step

        # First in a pass: the audit events that the other steps' changes wrote are sealed by
        # the next pass, so the sealing lag stays within the pass interval.
        maintenance_step(
            key="audit_seal", order=1, label="{n} audit events sealed", run=audit_seal_step
        )
