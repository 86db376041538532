from django.urls import path

from reviews import views

urlpatterns = [
    path("", views.home, name="home"),
    path("queues/<int:queue_id>/work/", views.queue_work, name="queue-work"),
    path("leases/<uuid:lease_id>/decide/", views.lease_decide, name="lease-decide"),
    path("leases/<uuid:lease_id>/skip/", views.lease_skip, name="lease-skip"),
    path("leases/<uuid:lease_id>/renew/", views.lease_renew, name="lease-renew"),
    path("reviews/mine/", views.my_reviews, name="my-reviews"),
    path("reviews/<int:review_id>/undo/", views.review_undo, name="review-undo"),
]
