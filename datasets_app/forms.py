"""The build form: turns its fields into the options `dataset_version_build` takes."""

from typing import Any

from django import forms
from django.conf import settings

from reviews.models import Queue

from . import services


def _words(value: str) -> list[str]:
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


class DatasetBuildForm(forms.Form):
    name = forms.CharField(label="Version name", max_length=100)
    queues = forms.MultipleChoiceField(
        label="Queues",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: all queues.",
    )
    tags = forms.CharField(label="Tags", required=False, help_text="Comma-separated; any of them.")
    sources = forms.CharField(label="Sources", required=False, help_text="Comma-separated.")
    model_name = forms.CharField(label="Model name", required=False)
    model_version = forms.CharField(label="Model version", required=False)
    resolved_from = forms.DateField(
        label="Resolved from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    resolved_to = forms.DateField(
        label="Resolved until", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    labels = forms.MultipleChoiceField(
        label="Resolutions to include",
        choices=[(label, label) for label in services.LABELS],
        initial=list(services.LABELS),
        widget=forms.CheckboxSelectMultiple,
    )
    include_auto_accepted = forms.BooleanField(
        label="Include auto-accepted outputs",
        required=False,
        help_text="Auto-accepted outputs were never reviewed; they weigh 0.5.",
    )
    pii = forms.ChoiceField(
        label="Personal data (PII)",
        choices=[("mask", "Mask with typed placeholders"), ("drop", "Drop the example"),
                 ("off", "Leave as is")],
        initial="mask",
        help_text="E-mail, phone, IBAN and card numbers; masking keeps the example.",
    )  # fmt: skip
    pii_patterns = forms.CharField(
        label="Extra PII patterns",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One per line: TYPE=regular expression, e.g. POLICY=POL-\\d{6}",
    )
    pii_allow = forms.CharField(
        label="Never mask",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One per line: your own published phone numbers and addresses "
        "(masking them teaches the model to answer “call <PHONE>”).",
    )
    near_dup_threshold = forms.FloatField(
        label="Near-duplicate threshold",
        required=False, initial=0.8, min_value=0, max_value=1,
        help_text="Word 3-gram Jaccard of the inputs; empty or 0 turns near dedup off.",
    )  # fmt: skip
    leakage_threshold = forms.FloatField(
        label="Train/eval leakage threshold", initial=0.8, min_value=0.01, max_value=1
    )
    max_length = forms.IntegerField(label="Maximum length", required=False, min_value=1)
    tokenizer_path = forms.CharField(
        label="Tokenizer file",
        required=False,
        help_text="A tokenizer.json: lengths in tokens; else characters.",
    )
    caps = forms.CharField(
        label="Balance caps",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One per line: dimension:value=max (label, tag, source, queue; value * = any).",
    )
    seed = forms.IntegerField(label="Random seed", initial=0, min_value=0)
    eval_fraction = forms.FloatField(label="Eval share", initial=0.1, min_value=0, max_value=0.99)
    stratify = forms.ChoiceField(
        label="Stratify the split",
        choices=[("", "No"), ("label", "By label"), ("source", "By source"), ("queue", "By queue")],
        required=False,
    )
    run = forms.ChoiceField(
        label="Run the build",
        choices=[("auto", f"Inline up to {services.INLINE_LIMIT} examples, else background"),
                 ("inline", "Inline"), ("background", "Background job")],
        initial="auto",
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["queues"].choices = [
            (name, name) for name in Queue.objects.order_by("name").values_list("name", flat=True)
        ]
        self.fields["pii_allow"].initial = "\n".join(settings.SIGNOFF_PII_ALLOW)

    def clean_pii_patterns(self) -> dict[str, str]:
        out = {}
        for line in self.cleaned_data["pii_patterns"].splitlines():
            if not line.strip():
                continue
            kind, sep, pattern = line.partition("=")
            if not sep:
                raise forms.ValidationError(f"{line!r} is not TYPE=regex.")
            out[kind.strip()] = pattern.strip()
        return out

    def clean_pii_allow(self) -> list[str]:
        return [
            line.strip() for line in self.cleaned_data["pii_allow"].splitlines() if line.strip()
        ]

    def clean_caps(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for line in self.cleaned_data["caps"].splitlines():
            if not line.strip():
                continue
            head, sep, number = line.rpartition("=")
            dim, colon, value = head.partition(":")
            if not sep or not colon or not number.strip().isdigit():
                raise forms.ValidationError(f"{line!r} is not dimension:value=max.")
            out.setdefault(dim.strip(), {})[value.strip()] = int(number)
        return out

    def options(self) -> dict[str, Any]:
        data = self.cleaned_data
        options: dict[str, Any] = {
            "queues": data["queues"],
            "tags": _words(data["tags"]),
            "sources": _words(data["sources"]),
            "model_name": data["model_name"],
            "model_version": data["model_version"],
            "resolved_from": data["resolved_from"].isoformat() if data["resolved_from"] else None,
            "resolved_to": (
                f"{data['resolved_to'].isoformat()}T23:59:59.999999"
                if data["resolved_to"]
                else None
            ),
            "labels": data["labels"],
            "include_auto_accepted": data["include_auto_accepted"],
            "pii": data["pii"],
            "pii_patterns": data["pii_patterns"],
            "pii_allow": data["pii_allow"],
            "near_dup_threshold": data["near_dup_threshold"],
            "leakage_threshold": data["leakage_threshold"],
            "max_length": data["max_length"],
            "tokenizer_path": data["tokenizer_path"],
            "caps": data["caps"],
            "seed": data["seed"],
            "eval_fraction": data["eval_fraction"],
            "stratify": data["stratify"],
        }
        return options
