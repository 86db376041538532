from django.urls import path

from reviews.api import views

urlpatterns = [
    path("outputs/", views.OutputListCreateApi.as_view(), name="api-outputs"),
    path("outputs/<int:pk>/", views.OutputDetailApi.as_view(), name="api-output"),
    path("outputs/<int:pk>/gold/", views.OutputGoldApi.as_view(), name="api-output-gold"),
    path("queues/", views.QueueListCreateApi.as_view(), name="api-queues"),
    path("queues/<int:pk>/", views.QueueDetailApi.as_view(), name="api-queue"),
    path("queues/<int:pk>/claim/", views.QueueClaimApi.as_view(), name="api-queue-claim"),
    path(
        "queues/<int:pk>/agreement/", views.QueueAgreementApi.as_view(), name="api-queue-agreement"
    ),
    path("leases/<uuid:pk>/renew/", views.LeaseRenewApi.as_view(), name="api-lease-renew"),
    path("leases/<uuid:pk>/release/", views.LeaseReleaseApi.as_view(), name="api-lease-release"),
    path("reviews/", views.ReviewListCreateApi.as_view(), name="api-reviews"),
    path("reviews/<int:pk>/undo/", views.ReviewUndoApi.as_view(), name="api-review-undo"),
    path("routing-rules/", views.RoutingRuleListCreateApi.as_view(), name="api-routing-rules"),
    path("routing-rules/<int:pk>/", views.RoutingRuleDetailApi.as_view(), name="api-routing-rule"),
]
