"""Pages of the `training` namespace that ask a channel's live version (config/urls.py
composes the namespace)."""

from django.urls import path

from serving import views

urlpatterns = [
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
]
