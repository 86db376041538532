"""The audit log's API: list, verify, JSONL export."""

from django.urls import path

from core.api.audit import AuditListApi, AuditVerifyApi
from core.api.audit_export import AuditExportApi

urlpatterns = [
    path("audit/", AuditListApi.as_view(), name="api-audit"),
    path("audit/verify/", AuditVerifyApi.as_view(), name="api-audit-verify"),
    path("audit/export/", AuditExportApi.as_view(), name="api-audit-export"),
]
