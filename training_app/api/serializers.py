from rest_framework import serializers

from training_app.models import Evaluation, ModelVersion, TrainingRun


class TrainingRunCreateInput(serializers.Serializer):
    dataset_version = serializers.IntegerField()
    base_model = serializers.CharField(required=False, allow_blank=True, default="")
    parent_version = serializers.UUIDField(required=False, allow_null=True, default=None)
    hyperparameters = serializers.DictField(required=False, default=dict)
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)


class TrainingRunOutput(serializers.ModelSerializer):
    dataset_version = serializers.IntegerField(source="dataset_version_id")
    base_model = serializers.CharField(source="base_model.name")
    parent_version = serializers.UUIDField(source="parent_version_id", allow_null=True)
    model_version = serializers.SerializerMethodField()
    recipe = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username")
    percent = serializers.IntegerField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "status",
            "dataset_version",
            "base_model",
            "parent_version",
            "model_version",
            "hyperparameters",
            "recipe",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "attempts",
            "lease_owner",
            "heartbeat_at",
            "cancel_requested_at",
            "failure_reason",
            "progress",
            "percent",
            "loss_history",
            "eval_history",
            "log_tail",
        ]

    def get_model_version(self, run: TrainingRun) -> dict | None:
        version = getattr(run, "model_version", None)
        return (
            {"id": str(version.pk), "name": version.name, "status": version.status}
            if version
            else None
        )

    def get_recipe(self, run: TrainingRun) -> dict | None:
        """How the schedule was chosen, as its model version recorded it (training/recipe.py):
        {fitted, explicit, reasons, train_examples, train_tokens, steps_per_epoch,
        total_steps}; null for a run launched before the recipe was applied."""
        version = getattr(run, "model_version", None)
        return (version.config or {}).get("recipe") if version else None


class EvaluationOutput(serializers.ModelSerializer):
    reference = serializers.CharField(source="reference_label")

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "status",
            "reference",
            "split",
            "metrics",
            "samples",
            "failure_reason",
            "created_at",
            "finished_at",
        ]


class ModelVersionOutput(serializers.ModelSerializer):
    run = serializers.UUIDField(source="run_id")
    parent = serializers.UUIDField(source="parent_id", allow_null=True)
    base_model = serializers.CharField(source="base_model.name")
    dataset_version = serializers.IntegerField(source="dataset_version_id")
    created_by = serializers.CharField(source="created_by.username")

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "status",
            "run",
            "parent",
            "base_model",
            "base_model_ref",
            "dataset_version",
            "config",
            "environment",
            "manifest",
            "metrics",
            "created_by",
            "created_at",
            "trained_at",
        ]


class ModelVersionDetailOutput(ModelVersionOutput):
    evaluations = EvaluationOutput(many=True, read_only=True)

    class Meta(ModelVersionOutput.Meta):
        fields = [*ModelVersionOutput.Meta.fields, "evaluations"]
