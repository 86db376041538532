from django.urls import path

from monitoring.api import views

urlpatterns = [
    path("monitoring/", views.MonitoringOverviewApi.as_view(), name="api-monitoring"),
    path(
        "monitoring/versions/<uuid:version_id>/",
        views.VersionMonitoringApi.as_view(),
        name="api-monitoring-version",
    ),
    path(
        "monitoring/channels/<slug:name>/settings/",
        views.ChannelMonitoringApi.as_view(),
        name="api-monitoring-channel-settings",
    ),
    path("monitoring/alerts/", views.DriftAlertListApi.as_view(), name="api-drift-alerts"),
    path(
        "monitoring/alerts/<int:pk>/acknowledge/",
        views.DriftAlertAcknowledgeApi.as_view(),
        name="api-drift-alert-acknowledge",
    ),
    path(
        "model-versions/<uuid:version_id>/retrain/",
        views.RetrainApi.as_view(),
        name="api-model-version-retrain",
    ),
    path("webhooks/", views.WebhookListCreateApi.as_view(), name="api-webhooks"),
    path(
        "webhooks/deliveries/",
        views.WebhookDeliveryListApi.as_view(),
        name="api-webhook-deliveries",
    ),
]
