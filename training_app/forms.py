from django import forms

from datasets_app.models import DatasetVersion

from .models import BaseModel, ModelVersion
from .services.runs import PARENT_STATUSES
from .training.hyperparameters import DEFAULTS


class LaunchForm(forms.Form):
    """The page's input; the service validates the hyperparameters (same errors as the API)."""

    dataset_version = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.filter(status=DatasetVersion.Status.READY)
    )
    base_model = forms.ModelChoiceField(
        queryset=BaseModel.objects.all(), required=False, empty_label="default"
    )
    parent_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(status__in=PARENT_STATUSES),
        required=False,
        empty_label="none: new adapter on the base model",
    )
    name = forms.CharField(required=False, max_length=100)
    lora_r = forms.IntegerField(initial=DEFAULTS["lora_r"])
    lora_alpha = forms.IntegerField(initial=DEFAULTS["lora_alpha"])
    lora_dropout = forms.FloatField(initial=DEFAULTS["lora_dropout"])
    target_modules = forms.CharField(initial=",".join(DEFAULTS["target_modules"]))
    learning_rate = forms.FloatField(initial=DEFAULTS["learning_rate"])
    num_epochs = forms.IntegerField(initial=DEFAULTS["num_epochs"])
    batch_size = forms.IntegerField(initial=DEFAULTS["batch_size"])
    gradient_accumulation_steps = forms.IntegerField(
        initial=DEFAULTS["gradient_accumulation_steps"]
    )
    max_length = forms.IntegerField(initial=DEFAULTS["max_length"])
    seed = forms.IntegerField(initial=DEFAULTS["seed"])

    HYPERPARAMETERS = (
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "learning_rate",
        "num_epochs",
        "batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "seed",
    )

    def hyperparameters(self) -> dict:
        return {name: self.cleaned_data[name] for name in self.HYPERPARAMETERS}
