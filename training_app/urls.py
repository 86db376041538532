"""Training pages, in the `training` namespace (config/urls.py composes it with the
governance, serving, monitoring and audit pages, which keep their URL names)."""

from django.urls import path

from training_app import views

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
]
