from django.urls import path

from . import views

app_name = "training"

urlpatterns = [
    path("", views.index, name="index"),
    path("runs/new/", views.launch, name="launch"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run"),
    path("runs/<uuid:run_id>/progress/", views.run_progress, name="run-progress"),
    path("runs/<uuid:run_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("versions/", views.version_list, name="versions"),
    path("versions/<uuid:version_id>/", views.version_detail, name="version"),
]
