from django.urls import path

from . import audit_views, views
from . import governance_views as gov
from . import monitoring_views as mon

app_name = "training"

urlpatterns = [
    path("", views.index, name="index"),
    path("runs/new/", views.launch, name="launch"),
    path("runs/new/estimate/", views.launch_estimate, name="launch-estimate"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run"),
    path("runs/<uuid:run_id>/progress/", views.run_progress, name="run-progress"),
    path("runs/<uuid:run_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("versions/", views.version_list, name="versions"),
    path("versions/<uuid:version_id>/", views.version_detail, name="version"),
    path(
        "versions/<uuid:version_id>/evaluation/",
        views.version_evaluation,
        name="version-evaluation",
    ),
    path("versions/<uuid:version_id>/governance/", gov.governance, name="governance"),
    path("versions/<uuid:version_id>/signoff/", gov.signoff_request_new, name="signoff-new"),
    path("versions/<uuid:version_id>/retire/", gov.version_retire, name="retire"),
    path("versions/<uuid:version_id>/compliance/", gov.compliance, name="compliance"),
    path(
        "versions/<uuid:version_id>/compliance/archive/",
        gov.compliance_download,
        name="compliance-archive",
    ),
    path("versions/<uuid:version_id>/lineage/", gov.lineage, name="lineage"),
    path("examples/<int:example_id>/lineage/", gov.example_lineage_view, name="example-lineage"),
    path("signoff/<int:pk>/", gov.signoff_detail, name="signoff"),
    path("signoff/<int:pk>/comparisons/", gov.signoff_comparisons, name="signoff-comparisons"),
    path("signoff/<int:pk>/decide/", gov.signoff_decision, name="signoff-decide"),
    path("channels/", gov.channel_list, name="channels"),
    path("channels/<slug:name>/", gov.channel_detail, name="channel"),
    path("channels/<slug:name>/deploy/", gov.channel_deploy_view, name="channel-deploy"),
    path("channels/<slug:name>/try/", views.channel_try, name="channel-try"),
    path(
        "channels/<slug:name>/try/<uuid:try_id>/",
        views.channel_try_job,
        name="channel-try-job",
    ),
    path(
        "channels/<slug:name>/answers/<int:output_id>/",
        views.channel_answer,
        name="channel-answer",
    ),
    path("channels/<slug:name>/rollback/", gov.channel_rollback_view, name="channel-rollback"),
    path("audit/", gov.audit_log, name="audit"),
    path("audit/verify/", audit_views.audit_verify_page, name="audit-verify"),
    path("monitoring/", mon.overview, name="monitoring"),
    path(
        "monitoring/versions/<uuid:version_id>/",
        mon.version_monitoring,
        name="monitoring-version",
    ),
    path("monitoring/versions/<uuid:version_id>/retrain/", mon.retrain, name="monitoring-retrain"),
    path(
        "monitoring/alerts/<int:pk>/acknowledge/",
        mon.alert_acknowledge,
        name="monitoring-alert-ack",
    ),
    path("webhooks/", mon.webhooks, name="webhooks"),
]
