from django.urls import path

from . import views

app_name = "datasets"

urlpatterns = [
    path("", views.version_list, name="list"),
    path("new/", views.version_build, name="build"),
    path("<int:pk>/", views.version_detail, name="detail"),
    path("<int:pk>/progress/", views.version_build_progress, name="progress"),
]
