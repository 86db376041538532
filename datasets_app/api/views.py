"""Thin API views: validate, call a service or selector, serialize."""

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import allowed

from .. import selectors, services
from .serializers import (
    DatasetBuildInSerializer,
    DatasetDiffSerializer,
    DatasetVersionListSerializer,
    DatasetVersionSerializer,
)


class DatasetVersionListCreateApi(generics.ListAPIView):
    """List dataset versions (readers); build one from filters (ml_engineer, admin)."""

    serializer_class = DatasetVersionListSerializer

    def get_permissions(self):
        if self.request.method == "POST":
            return [allowed("datasets.build")()]
        return [allowed("datasets.read")()]

    def get_queryset(self):
        return selectors.dataset_versions_list()

    @extend_schema(
        request=DatasetBuildInSerializer,
        responses={201: DatasetVersionSerializer, 202: DatasetVersionSerializer},
        description="201 with the ready version when built inline; 202 with a building "
        "version when queued (poll GET /api/datasets/{id}/ for progress).",
    )
    def post(self, request: Request) -> Response:
        data = DatasetBuildInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        options = dict(data.validated_data)
        parent_id = options.pop("parent", None)
        version, inline = services.dataset_version_start(
            user=request.user,
            name=options.pop("name"),
            parent=selectors.dataset_version_get(version_id=parent_id) if parent_id else None,
            run=options.pop("run", "auto"),
            **options,
        )
        code = status.HTTP_201_CREATED if inline else status.HTTP_202_ACCEPTED
        return Response(DatasetVersionSerializer(version).data, status=code)


class DatasetVersionDetailApi(APIView):
    permission_classes = [allowed("datasets.read")]

    @extend_schema(responses=DatasetVersionSerializer)
    def get(self, request: Request, pk: int) -> Response:
        version = selectors.dataset_version_get(version_id=pk)
        return Response(DatasetVersionSerializer(version).data)


class DatasetVersionExportApi(APIView):
    """JSONL (chat, prompt_completion, dpo) or the Markdown data card, streamed."""

    permission_classes = [allowed("datasets.read")]

    def perform_content_negotiation(self, request, force=False):
        # `format` names the export here, not a DRF renderer.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "format", str, enum=[*selectors.EXPORT_FORMATS, "card"], default="chat"
            ),
            OpenApiParameter("split", str, enum=list(selectors.SPLITS), required=False),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.BINARY, description="JSONL or Markdown")},
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        version = selectors.dataset_version_get(version_id=pk)
        fmt = request.query_params.get("format", "chat")
        split = request.query_params.get("split") or None
        stem = f"dataset-{version.pk}"
        if fmt == "card":
            response = HttpResponse(
                selectors.dataset_version_card(version=version),
                content_type="text/markdown; charset=utf-8",
            )
            response["Content-Disposition"] = f'attachment; filename="{stem}-card.md"'
            return response
        lines = selectors.dataset_version_export_lines(version=version, fmt=fmt, split=split)
        first = next(lines, None)  # raises here (400/409) before streaming starts

        def body():
            if first is not None:
                yield first
                yield from lines

        response = StreamingHttpResponse(body(), content_type="application/jsonl; charset=utf-8")
        name = f"{stem}-{fmt}{'-' + split if split else ''}.jsonl"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class DatasetVersionDiffApi(APIView):
    permission_classes = [allowed("datasets.read")]

    @extend_schema(responses=DatasetDiffSerializer)
    def get(self, request: Request, pk: int, other_id: int) -> Response:
        version = selectors.dataset_version_get(version_id=pk)
        other = selectors.dataset_version_get(version_id=other_id)
        diff = selectors.dataset_version_diff(version=version, other=other)
        body = {"version": version.pk, "other": other.pk, **diff.as_dict()}
        return Response(DatasetDiffSerializer(body).data)
