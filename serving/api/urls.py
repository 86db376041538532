from django.urls import path

from serving.api import views

urlpatterns = [
    path(
        "channels/<slug:name>/generate/",
        views.ChannelGenerateApi.as_view(),
        name="api-channel-generate",
    ),
]
