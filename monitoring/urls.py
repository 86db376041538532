"""Monitoring pages, in the `training` namespace (config/urls.py composes it)."""

from django.urls import path

from monitoring import views

urlpatterns = [
    path("monitoring/", views.overview, name="monitoring"),
    path(
        "monitoring/versions/<uuid:version_id>/",
        views.version_monitoring,
        name="monitoring-version",
    ),
    path(
        "monitoring/versions/<uuid:version_id>/retrain/", views.retrain, name="monitoring-retrain"
    ),
    path(
        "monitoring/alerts/<int:pk>/acknowledge/",
        views.alert_acknowledge,
        name="monitoring-alert-ack",
    ),
    path("webhooks/", views.webhooks, name="webhooks"),
]
