"""Governance pages, in the `training` namespace (config/urls.py composes it)."""

from django.urls import path

from governance import views

urlpatterns = [
    path("versions/<uuid:version_id>/governance/", views.governance, name="governance"),
    path("versions/<uuid:version_id>/signoff/", views.signoff_request_new, name="signoff-new"),
    path("versions/<uuid:version_id>/retire/", views.version_retire, name="retire"),
    path("versions/<uuid:version_id>/compliance/", views.compliance, name="compliance"),
    path(
        "versions/<uuid:version_id>/compliance/archive/",
        views.compliance_download,
        name="compliance-archive",
    ),
    path("versions/<uuid:version_id>/lineage/", views.lineage, name="lineage"),
    path("examples/<int:example_id>/lineage/", views.example_lineage_view, name="example-lineage"),
    path("signoff/<int:pk>/", views.signoff_detail, name="signoff"),
    path("signoff/<int:pk>/comparisons/", views.signoff_comparisons, name="signoff-comparisons"),
    path("signoff/<int:pk>/decide/", views.signoff_decision, name="signoff-decide"),
    path("channels/", views.channel_list, name="channels"),
    path("channels/<slug:name>/", views.channel_detail, name="channel"),
    path("channels/<slug:name>/deploy/", views.channel_deploy_view, name="channel-deploy"),
    path("channels/<slug:name>/rollback/", views.channel_rollback_view, name="channel-rollback"),
]
