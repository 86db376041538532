from django.urls import path

from governance.api import views

urlpatterns = [
    path(
        "model-versions/<uuid:version_id>/signoff-requests/",
        views.SignoffRequestCreateApi.as_view(),
        name="api-signoff-request-create",
    ),
    path(
        "signoff-requests/<int:pk>/",
        views.SignoffRequestDetailApi.as_view(),
        name="api-signoff-request",
    ),
    path(
        "signoff-requests/<int:pk>/decisions/",
        views.SignoffDecideApi.as_view(),
        name="api-signoff-decide",
    ),
    path(
        "model-versions/<uuid:version_id>/retire/",
        views.ModelVersionRetireApi.as_view(),
        name="api-model-version-retire",
    ),
    path(
        "model-versions/<uuid:version_id>/files/<str:filename>",
        views.ModelVersionFileApi.as_view(),
        name="api-model-version-file",
    ),
    path(
        "model-versions/<uuid:version_id>/compliance/",
        views.ComplianceReportApi.as_view(),
        name="api-compliance",
    ),
    path(
        "model-versions/<uuid:version_id>/compliance/archive/",
        views.ComplianceArchiveApi.as_view(),
        name="api-compliance-archive",
    ),
    path("channels/", views.ChannelListApi.as_view(), name="api-channels"),
    path("channels/<slug:name>/", views.ChannelDetailApi.as_view(), name="api-channel"),
    path(
        "channels/<slug:name>/history/",
        views.ChannelHistoryApi.as_view(),
        name="api-channel-history",
    ),
    path(
        "channels/<slug:name>/deploy/",
        views.ChannelDeployApi.as_view(),
        name="api-channel-deploy",
    ),
    path(
        "channels/<slug:name>/rollback/",
        views.ChannelRollbackApi.as_view(),
        name="api-channel-rollback",
    ),
]
