from django.urls import path

from . import views

urlpatterns = [
    path("datasets/", views.DatasetVersionListCreateApi.as_view(), name="api-datasets"),
    path("datasets/<int:pk>/", views.DatasetVersionDetailApi.as_view(), name="api-dataset"),
    path(
        "datasets/<int:pk>/export/",
        views.DatasetVersionExportApi.as_view(),
        name="api-dataset-export",
    ),
    path(
        "datasets/<int:pk>/diff/<int:other_id>/",
        views.DatasetVersionDiffApi.as_view(),
        name="api-dataset-diff",
    ),
]
