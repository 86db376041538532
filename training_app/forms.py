from django import forms

from datasets_app.models import DatasetVersion
from training_app.models import BaseModel, ModelVersion
from training_app.services.runs import PARENT_STATUSES
from training_app.training.hyperparameters import DEFAULTS
from training_app.training.recipe import SCHEDULE_FIELDS

FITTED_HINT = "fitted to the data"


class LaunchForm(forms.Form):
    """The page's input; the service validates the hyperparameters (same errors as the API).

    Only what the launcher set is sent: the fitted fields start blank and the others at their
    defaults, and a field left so is not sent, so the service fits the schedule to the dataset
    (training/recipe.py) exactly as for an API request that leaves those fields out."""

    dataset_version = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.filter(status=DatasetVersion.Status.READY).order_by("-pk"),
        label="Dataset version",
        help_text="A ready dataset version; its train split is trained on, its eval split "
        "picks the best adapter.",
    )
    base_model = forms.ModelChoiceField(
        queryset=BaseModel.objects.all(),
        required=False,
        empty_label="default",
        label="Base model",
        help_text="The model the adapter is trained on; with a parent version, the parent's.",
    )
    parent_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(status__in=PARENT_STATUSES),
        required=False,
        empty_label="none: new adapter on the base model",
        label="Continue from version",
        help_text="Train further from this version's adapter instead of a new one.",
    )
    name = forms.CharField(
        required=False,
        max_length=100,
        label="Version name",
        help_text="Optional; a name is generated when left empty.",
    )
    lora_r = forms.IntegerField(
        required=False,
        initial=DEFAULTS["lora_r"],
        label="LoRA rank (r)",
        help_text="Width of the adapter's low-rank matrices: higher learns more, costs more.",
    )
    lora_alpha = forms.IntegerField(
        required=False,
        initial=DEFAULTS["lora_alpha"],
        label="LoRA alpha",
        help_text="Scale of the adapter's update (alpha / r); usually twice the rank.",
    )
    lora_dropout = forms.FloatField(
        required=False,
        initial=DEFAULTS["lora_dropout"],
        label="LoRA dropout",
        help_text="Share of the adapter's inputs dropped while training (0 to 0.9).",
    )
    target_modules = forms.CharField(
        required=False,
        initial=",".join(DEFAULTS["target_modules"]),
        label="Target layers",
        help_text="Comma-separated layer names the adapter attaches to, e.g. q_proj,v_proj.",
    )
    learning_rate = forms.FloatField(
        required=False,
        label="Learning rate",
        help_text="Peak step size of the optimizer, after warm-up. Blank: fitted to the "
        f"dataset's size ({DEFAULTS['learning_rate']:g}, higher for a few examples).",
        widget=forms.NumberInput(attrs={"placeholder": FITTED_HINT, "step": "any"}),
    )
    num_epochs = forms.IntegerField(
        required=False,
        label="Epochs",
        help_text="Passes over the training split. Blank: fitted to the dataset's size (see "
        "the estimate below).",
        widget=forms.NumberInput(attrs={"placeholder": FITTED_HINT}),
    )
    batch_size = forms.IntegerField(
        required=False,
        label="Batch size",
        help_text="Examples per forward pass. Blank: fitted to the dataset's size.",
        widget=forms.NumberInput(attrs={"placeholder": FITTED_HINT}),
    )
    gradient_accumulation_steps = forms.IntegerField(
        required=False,
        initial=DEFAULTS["gradient_accumulation_steps"],
        label="Gradient accumulation",
        help_text="Batches per optimizer step (effective batch: batch size times this).",
    )
    max_length = forms.IntegerField(
        required=False,
        initial=DEFAULTS["max_length"],
        label="Maximum length (tokens)",
        help_text="Longer examples are truncated to this many tokens.",
    )
    seed = forms.IntegerField(
        required=False,
        initial=DEFAULTS["seed"],
        label="Random seed",
        help_text="Same seed, data and settings: the same run.",
    )

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
        """The hyperparameters the launcher set (of the fields that are valid): a blank field,
        or one that is not fitted to the data and still holds its default, is left out."""
        values = {}
        for name in self.HYPERPARAMETERS:
            value = self.cleaned_data.get(name)
            if value is None or value == "":
                continue
            if name not in SCHEDULE_FIELDS and _same(value, DEFAULTS[name]):
                continue
            values[name] = value
        return values


def _same(value, default) -> bool:
    if isinstance(default, list):  # target_modules, typed as "q_proj, v_proj"
        value = [part.strip() for part in str(value).split(",") if part.strip()]
    return value == default
