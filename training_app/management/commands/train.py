"""Train in the foreground with a progress bar: the same services as the API and the worker."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from datasets_app.models import DatasetVersion
from training_app.models import BaseModel, ModelVersion
from training_app.services import training_run_create, training_run_execute, worker_owner


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class Command(BaseCommand):
    help = "Launch a training run and train it here, in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--dataset-version", type=int, required=True)
        parser.add_argument("--user", required=True, help="An ml_engineer or admin username.")
        parser.add_argument("--base-model", default="")
        parser.add_argument("--parent", default="", help="Model version id to continue from.")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="A hyperparameter, e.g. --set lora_r=16 --set learning_rate=1e-3. What is not "
            "set is fitted to the dataset (the schedule: epochs, batch size, steps, warm-up, "
            "eval and checkpoint cadence) or takes its default.",
        )
        parser.add_argument("--no-evaluate", action="store_true")

    def handle(self, *args, **o):
        from tqdm import tqdm

        try:
            user = get_user_model().objects.get(username=o["user"])
            dataset = DatasetVersion.objects.get(pk=o["dataset_version"])
            base = BaseModel.objects.get(name=o["base_model"]) if o["base_model"] else None
            parent = ModelVersion.objects.get(pk=o["parent"]) if o["parent"] else None
        except Exception as exc:
            raise CommandError(f"not found: {exc}") from exc
        params = {}
        for item in o["set"]:
            key, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--set {item}: expected KEY=VALUE")
            params[key.strip()] = _value(value.strip())
        try:
            run = training_run_create(
                user=user,
                dataset_version=dataset,
                base_model=base,
                parent_version=parent,
                hyperparameters=params,
                name=o["name"],
                enqueue=False,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"run {run.pk} (model version {run.model_version.name})")
        recipe = run.model_version.config.get("recipe") or {}
        if recipe:
            self.stdout.write(
                f"{recipe['total_steps']} optimizer steps over {recipe['train_examples']} "
                "training examples"
                + (f"; as set: {', '.join(recipe['explicit'])}" if recipe["explicit"] else "")
            )
            for reason in recipe["reasons"]:
                self.stdout.write(f"  fitted: {reason}")
        bar = tqdm(total=None, unit="step", dynamic_ncols=True)

        def progress(p):
            bar.total = p.total_steps
            bar.n = p.step
            bar.set_postfix(loss=f"{p.loss:.3f}", tok_s=f"{p.tokens_per_second:.0f}")
            bar.refresh()

        try:
            run = training_run_execute(
                run_id=run.pk,
                owner=f"cli:{worker_owner()}",
                on_progress=progress,
                evaluate="skip" if o["no_evaluate"] else "inline",
            )
        finally:
            bar.close()
        run.refresh_from_db()
        version = run.model_version
        version.refresh_from_db()
        self.stdout.write(f"run {run.status}: {run.failure_reason or version.artifact_dir}")
        for evaluation in version.evaluations.all():
            self.stdout.write(json.dumps(evaluation.metrics, indent=2))
        if run.status != "succeeded":
            raise CommandError(f"run {run.status}")
