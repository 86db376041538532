"""The generate API: ask a channel's live version; the answer is recorded as an output of
that version and routed into review."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import allowed
from governance.selectors import channel_get
from serving.services.generate import channel_generate


class GenerateInput(serializers.Serializer):
    prompt = serializers.JSONField()
    max_new_tokens = serializers.IntegerField(required=False, default=None, allow_null=True)


class ChannelGenerateApi(APIView):
    permission_classes = [allowed("channel.generate")]

    @extend_schema(request=GenerateInput, responses=dict)
    def post(self, request, name):
        data = GenerateInput(data=request.data)
        data.is_valid(raise_exception=True)
        output, answer = channel_generate(
            user=request.user,
            channel=channel_get(name),
            prompt=data.validated_data["prompt"],
            max_new_tokens=data.validated_data["max_new_tokens"],
        )
        return Response(
            {
                "answer": answer["text"],
                "confidence": answer["confidence"],
                "model_version": {"id": answer["version_id"], "name": answer["version_name"]},
                "seconds": answer["seconds"],
                "output": {
                    "id": output.pk,
                    "status": output.status,
                    "queue": output.queue.name if output.queue_id else None,
                    "routing_reason": output.routing_reason,
                },
            }
        )
