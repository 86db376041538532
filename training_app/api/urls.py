from django.urls import path

from reviews.api.audit_export import AuditExportApi

from . import governance, monitoring, views

urlpatterns = [
    path("training-runs/", views.TrainingRunListCreateApi.as_view(), name="api-training-runs"),
    path(
        "training-runs/<uuid:run_id>/",
        views.TrainingRunDetailApi.as_view(),
        name="api-training-run",
    ),
    path(
        "training-runs/<uuid:run_id>/cancel/",
        views.TrainingRunCancelApi.as_view(),
        name="api-training-run-cancel",
    ),
    path("model-versions/", views.ModelVersionListApi.as_view(), name="api-model-versions"),
    path(
        "model-versions/<uuid:version_id>/",
        views.ModelVersionDetailApi.as_view(),
        name="api-model-version",
    ),
    path(
        "model-versions/<uuid:version_id>/signoff-requests/",
        governance.SignoffRequestCreateApi.as_view(),
        name="api-signoff-request-create",
    ),
    path(
        "signoff-requests/<int:pk>/",
        governance.SignoffRequestDetailApi.as_view(),
        name="api-signoff-request",
    ),
    path(
        "signoff-requests/<int:pk>/decisions/",
        governance.SignoffDecideApi.as_view(),
        name="api-signoff-decide",
    ),
    path(
        "model-versions/<uuid:version_id>/retire/",
        governance.ModelVersionRetireApi.as_view(),
        name="api-model-version-retire",
    ),
    path(
        "model-versions/<uuid:version_id>/files/<str:filename>",
        governance.ModelVersionFileApi.as_view(),
        name="api-model-version-file",
    ),
    path(
        "model-versions/<uuid:version_id>/compliance/",
        governance.ComplianceReportApi.as_view(),
        name="api-compliance",
    ),
    path(
        "model-versions/<uuid:version_id>/compliance/archive/",
        governance.ComplianceArchiveApi.as_view(),
        name="api-compliance-archive",
    ),
    path("channels/", governance.ChannelListApi.as_view(), name="api-channels"),
    path("channels/<slug:name>/", governance.ChannelDetailApi.as_view(), name="api-channel"),
    path(
        "channels/<slug:name>/history/",
        governance.ChannelHistoryApi.as_view(),
        name="api-channel-history",
    ),
    path(
        "channels/<slug:name>/deploy/",
        governance.ChannelDeployApi.as_view(),
        name="api-channel-deploy",
    ),
    path(
        "channels/<slug:name>/rollback/",
        governance.ChannelRollbackApi.as_view(),
        name="api-channel-rollback",
    ),
    path(
        "channels/<slug:name>/generate/",
        governance.ChannelGenerateApi.as_view(),
        name="api-channel-generate",
    ),
    path("audit/export/", AuditExportApi.as_view(), name="api-audit-export"),
    path("monitoring/", monitoring.MonitoringOverviewApi.as_view(), name="api-monitoring"),
    path(
        "monitoring/versions/<uuid:version_id>/",
        monitoring.VersionMonitoringApi.as_view(),
        name="api-monitoring-version",
    ),
    path(
        "monitoring/channels/<slug:name>/settings/",
        monitoring.ChannelMonitoringApi.as_view(),
        name="api-monitoring-channel-settings",
    ),
    path("monitoring/alerts/", monitoring.DriftAlertListApi.as_view(), name="api-drift-alerts"),
    path(
        "monitoring/alerts/<int:pk>/acknowledge/",
        monitoring.DriftAlertAcknowledgeApi.as_view(),
        name="api-drift-alert-acknowledge",
    ),
    path(
        "model-versions/<uuid:version_id>/retrain/",
        monitoring.RetrainApi.as_view(),
        name="api-model-version-retrain",
    ),
    path("webhooks/", monitoring.WebhookListCreateApi.as_view(), name="api-webhooks"),
    path(
        "webhooks/deliveries/",
        monitoring.WebhookDeliveryListApi.as_view(),
        name="api-webhook-deliveries",
    ),
]
