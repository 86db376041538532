"""One view per operation: validate -> call a service -> serialize."""

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import allowed
from datasets_app.models import DatasetVersion
from training_app.api.serializers import (
    ModelVersionDetailOutput,
    ModelVersionOutput,
    TrainingRunCreateInput,
    TrainingRunOutput,
)
from training_app.errors import InvalidTrainingRequest
from training_app.models import BaseModel, Evaluation, ModelVersion
from training_app.selectors import (
    model_version_get,
    model_versions_list,
    training_run_get,
    training_runs_list,
)
from training_app.services import training_run_cancel, training_run_create


def _lookup(model, field: str, **query):
    try:
        return model.objects.get(**query)
    except (model.DoesNotExist, ValueError) as exc:
        raise InvalidTrainingRequest(f"{field}: not found.", field=field) from exc


class TrainingRunListCreateApi(generics.ListAPIView):
    # Training runs, newest first, paginated; launch one (ml_engineer, admin).
    serializer_class = TrainingRunOutput

    def get_permissions(self):
        if self.request.method == "POST":
            return [allowed("training.launch")()]
        return [allowed("training.view")()]

    def get_queryset(self):
        # pk breaks ties between runs created in the same instant, so pages never overlap.
        return training_runs_list().order_by("-created_at", "-pk")

    @extend_schema(request=TrainingRunCreateInput, responses={201: TrainingRunOutput})
    def post(self, request):
        data = TrainingRunCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        dataset_version = _lookup(DatasetVersion, "dataset_version", pk=values["dataset_version"])
        base_model = (
            _lookup(BaseModel, "base_model", name=values["base_model"])
            if values["base_model"]
            else None
        )
        parent = (
            _lookup(ModelVersion, "parent_version", pk=values["parent_version"])
            if values["parent_version"]
            else None
        )
        run = training_run_create(
            user=request.user,
            dataset_version=dataset_version,
            base_model=base_model,
            parent_version=parent,
            hyperparameters=values["hyperparameters"],
            name=values["name"],
        )
        run = training_run_get(run_id=run.pk)
        return Response(TrainingRunOutput(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses=TrainingRunOutput)
    def get(self, request, run_id):
        return Response(TrainingRunOutput(training_run_get(run_id=run_id)).data)


class TrainingRunCancelApi(APIView):
    permission_classes = [allowed("training.launch")]

    @extend_schema(request=None, responses=TrainingRunOutput)
    def post(self, request, run_id):
        run = training_run_cancel(user=request.user, run=training_run_get(run_id=run_id))
        return Response(TrainingRunOutput(training_run_get(run_id=run.pk)).data)


class ModelVersionListApi(generics.ListAPIView):
    permission_classes = [allowed("training.view")]
    serializer_class = ModelVersionOutput
    filterset_fields = ["status", "dataset_version", "base_model"]

    def get_queryset(self):
        return model_versions_list()


class ModelVersionDetailApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses=ModelVersionDetailOutput)
    def get(self, request, version_id):
        version = model_version_get(version_id=version_id)
        version = (
            ModelVersion.objects.filter(pk=version.pk)
            .select_related("base_model", "created_by")
            .prefetch_related(
                Prefetch("evaluations", queryset=Evaluation.objects.select_related("reference"))
            )
            .get()
        )
        return Response(ModelVersionDetailOutput(version).data)
