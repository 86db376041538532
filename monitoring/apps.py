from django.apps import AppConfig

_VIEW = ["monitoring.view_driftalert", "monitoring.view_channelmonitoring"]


class MonitoringConfig(AppConfig):
    """Released versions watched: correction rates, drift alerts, the retraining flow and
    webhooks."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "monitoring"
    verbose_name = "Monitoring"
    # Merged by `manage.py bootstrap_roles`.
    role_permissions: dict[str, list[str]] = {
        "ml_engineer": list(_VIEW),
        "approver": list(_VIEW),
        "deployer": list(_VIEW),
        "auditor": list(_VIEW),
        # Webhooks and their delivery log are the admins' alone.
        "admin": [*_VIEW, "monitoring.view_webhook", "monitoring.view_webhookdelivery"],
    }

    def ready(self) -> None:
        from core.events import event_subscribe
        from core.maintenance import maintenance_step
        from monitoring.services.drift import drift_check_all
        from monitoring.services.webhooks import webhook_deliveries_resend, webhook_event_emit

        # Governance announces sign-off and deployment events; webhooks carry them out.
        event_subscribe(webhook_event_emit)
        maintenance_step(
            key="drift_alerts",
            order=60,
            label="{n} drift alerts raised",
            run=lambda: len(drift_check_all()),
        )
        maintenance_step(
            key="webhooks_resent",
            order=70,
            label="{n} webhook deliveries sent again",
            run=webhook_deliveries_resend,
        )
