"""Read-only views: every change goes through the services (and the audit chain)."""

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from training_app.models import BaseModel, Evaluation, ModelVersion, TrainingRun


@admin.register(BaseModel)
class BaseModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "architecture", "revision", "folder", "created_at"]


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "dataset_version", "base_model", "attempts", "created_at"]
    list_filter = ["status"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "status", "base_model", "dataset_version", "created_at"]
    list_filter = ["status"]


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = ["id", "version", "reference", "status", "created_at"]
