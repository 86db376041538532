from rest_framework import serializers

from .. import pipeline, services
from ..models import DatasetVersion


class DatasetBuildInSerializer(serializers.Serializer):
    """Build from filters and pipeline settings; anything left out takes its default.
    Types are checked here, meaning (paths, regexes, ranges) by the service: a 400 names the
    field either way."""

    name = serializers.CharField(max_length=100)
    parent = serializers.IntegerField(required=False, allow_null=True)
    run = serializers.ChoiceField(
        choices=["auto", "inline", "background"],
        required=False,
        help_text=f"auto: inline up to {services.INLINE_LIMIT} candidates, else a background job.",
    )
    queues = serializers.ListField(child=serializers.CharField(), required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    sources = serializers.ListField(child=serializers.CharField(), required=False)
    model_name = serializers.CharField(required=False, allow_blank=True)
    model_version = serializers.CharField(required=False, allow_blank=True)
    resolved_from = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    resolved_to = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    labels = serializers.ListField(
        child=serializers.ChoiceField(choices=list(services.LABELS)), required=False
    )
    include_auto_accepted = serializers.BooleanField(required=False)
    normalise = serializers.BooleanField(required=False)
    pii = serializers.ChoiceField(choices=list(services.PII_MODES), required=False)
    pii_patterns = serializers.DictField(child=serializers.CharField(), required=False)
    pii_allow = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="Texts never masked as PII: your own published phone numbers and addresses, "
        'e.g. ["1-800-555-0142", "complaints@example.com"].',
    )
    exact_dedup = serializers.BooleanField(required=False)
    near_dup_threshold = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=1
    )
    leakage_threshold = serializers.FloatField(required=False, min_value=0, max_value=1)
    ngram = serializers.IntegerField(required=False, min_value=1, max_value=10)
    max_length = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    tokenizer_path = serializers.CharField(required=False, allow_blank=True)
    caps = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField(min_value=0)),
        required=False,
        help_text='e.g. {"label": {"approved": 500}, "tag": {"*": 100}}; dimensions: '
        + ", ".join(pipeline.BALANCE_DIMENSIONS),
    )
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    eval_fraction = serializers.FloatField(required=False, min_value=0, max_value=0.99)
    stratify = serializers.ChoiceField(choices=list(services.STRATIFY), required=False)

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({unknown[0]: "Unknown field."})
        return attrs


class DatasetVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "name",
            "status",
            "manifest_hash",
            "created_by",
            "created_at",
            "built_at",
            "parent",
            "settings",
            "counts",
            "progress",
            "error",
        ]
        read_only_fields = fields


class DatasetVersionListSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    train = serializers.SerializerMethodField()
    eval = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = [
            "id", "name", "status", "manifest_hash", "created_by", "created_at", "built_at",
            "parent", "train", "eval",
        ]  # fmt: skip
        read_only_fields = fields

    def get_train(self, obj: DatasetVersion) -> int:
        return int((obj.counts or {}).get("train", 0))

    def get_eval(self, obj: DatasetVersion) -> int:
        return int((obj.counts or {}).get("eval", 0))


class DatasetDiffSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    other = serializers.IntegerField()
    added = serializers.IntegerField()
    removed = serializers.IntegerField()
    changed = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    added_ids = serializers.ListField(child=serializers.IntegerField())
    removed_ids = serializers.ListField(child=serializers.IntegerField())
    changed_ids = serializers.ListField(child=serializers.IntegerField())
    truncated = serializers.BooleanField()
