"""The trainer itself: LoRA fine-tuning, evaluation and base-model preparation.

No Django here, so it runs and tests alone (`python -m training_app.training.trainer --help`).
torch / transformers / peft are imported inside the modules that need them, never at package
import, so a web process importing this package's light helpers never loads them.
"""
