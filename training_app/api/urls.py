from django.urls import path

from training_app.api import views

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
]
