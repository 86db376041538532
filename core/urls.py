"""The audit log pages, in the `training` namespace (config/urls.py composes it)."""

from django.urls import path

from core import views

urlpatterns = [
    path("audit/", views.audit_log, name="audit"),
    path("audit/verify/", views.audit_verify_page, name="audit-verify"),
]
