"""manage.py build_dataset: build a dataset version from the command line, with a progress bar."""

import json
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from datasets_app import selectors, services


class ProgressBar:
    """One line redrawn in place on a terminal; one line per step otherwise."""

    def __init__(self, stream, width: int = 30):
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.last_step = None
        self.last_draw = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        if step == self.last_step and now - self.last_draw < 0.1 and done < total:
            return
        self.last_draw = now
        filled = int(self.width * done / total) if total else 0
        bar = "#" * filled + "." * (self.width - filled)
        figures = f" {done}/{total}" if total else ""
        line = f"{step:<14} [{bar}]{figures}"
        if self.tty:
            self.stream.write("\r" + line.ljust(70))
            if step == "done":
                self.stream.write("\n")
        elif step != self.last_step or done == total:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last_step = step


class Command(BaseCommand):
    help = "Build a dataset version from resolved outputs (same filters and settings as the API)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--user", required=True, help="Username of the builder (ml_engineer or admin)."
        )
        parser.add_argument(
            "--parent", type=int, help="Parent version id (default: newest of the same name)."
        )
        parser.add_argument("--queue", action="append", dest="queues", default=[])
        parser.add_argument("--tag", action="append", dest="tags", default=[])
        parser.add_argument("--source", action="append", dest="sources", default=[])
        parser.add_argument("--model", dest="model_name", default="")
        parser.add_argument("--model-version", default="")
        parser.add_argument("--from", dest="resolved_from", help="Resolved at or after (ISO 8601).")
        parser.add_argument("--to", dest="resolved_to", help="Resolved at or before (ISO 8601).")
        parser.add_argument("--label", action="append", dest="labels", choices=services.LABELS)
        parser.add_argument("--include-auto-accepted", action="store_true")
        parser.add_argument("--no-normalise", action="store_true")
        parser.add_argument("--pii", choices=services.PII_MODES, default="mask")
        parser.add_argument("--pii-pattern", action="append", default=[], metavar="TYPE=REGEX")
        parser.add_argument(
            "--pii-allow",
            action="append",
            default=None,
            metavar="TEXT",
            help="Never masked: your own published phone number or address (repeatable; "
            "default SIGNOFF_PII_ALLOW).",
        )
        parser.add_argument("--no-exact-dedup", action="store_true")
        parser.add_argument("--near-dup-threshold", type=float, default=0.8, help="0 turns it off.")
        parser.add_argument("--leakage-threshold", type=float, default=0.8)
        parser.add_argument("--ngram", type=int, default=3)
        parser.add_argument("--max-length", type=int)
        parser.add_argument("--tokenizer", dest="tokenizer_path", default="", help="tokenizer.json")
        parser.add_argument("--cap", action="append", default=[], metavar="DIM:VALUE=MAX")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--eval-fraction", type=float, default=0.1)
        parser.add_argument("--stratify", choices=services.STRATIFY, default="")
        parser.add_argument("--background", action="store_true", help="Queue it for a worker.")

    def handle(self, *args, **opts):
        user = get_user_model().objects.filter(username=opts["user"]).first()
        if user is None:
            raise CommandError(f"No user {opts['user']!r}.")
        if not selectors.can_build_datasets(user):
            raise CommandError(
                f"{user.get_username()} may not build datasets (ml_engineer or admin)."
            )
        patterns = {}
        for item in opts["pii_pattern"]:
            kind, sep, pattern = item.partition("=")
            if not sep:
                raise CommandError(f"--pii-pattern {item!r}: expected TYPE=REGEX")
            patterns[kind] = pattern
        caps: dict[str, dict[str, int]] = {}
        for item in opts["cap"]:
            head, sep, number = item.rpartition("=")
            dim, colon, value = head.partition(":")
            if not sep or not colon or not number.isdigit():
                raise CommandError(f"--cap {item!r}: expected DIM:VALUE=MAX")
            caps.setdefault(dim, {})[value] = int(number)
        options = {
            "queues": opts["queues"],
            "tags": opts["tags"],
            "sources": opts["sources"],
            "model_name": opts["model_name"],
            "model_version": opts["model_version"],
            "resolved_from": opts["resolved_from"],
            "resolved_to": opts["resolved_to"],
            "labels": opts["labels"] or list(services.LABELS),
            "include_auto_accepted": opts["include_auto_accepted"],
            "normalise": not opts["no_normalise"],
            "pii": opts["pii"],
            "pii_patterns": patterns,
            "exact_dedup": not opts["no_exact_dedup"],
            "near_dup_threshold": opts["near_dup_threshold"] or None,
            "leakage_threshold": opts["leakage_threshold"],
            "ngram": opts["ngram"],
            "max_length": opts["max_length"],
            "tokenizer_path": opts["tokenizer_path"],
            "caps": caps,
            "seed": opts["seed"],
            "eval_fraction": opts["eval_fraction"],
            "stratify": opts["stratify"],
            **({"pii_allow": opts["pii_allow"]} if opts["pii_allow"] is not None else {}),
        }
        try:
            parent = (
                selectors.dataset_version_get(version_id=opts["parent"]) if opts["parent"] else None
            )
            if opts["background"]:
                version = services.dataset_version_enqueue(
                    user=user, name=opts["name"], parent=parent, **options
                )
                self.stdout.write(f"queued dataset version {version.pk} on the 'datasets' queue")
                return
            bar = ProgressBar(self.stderr._out) if opts["verbosity"] > 0 else None
            version = services.dataset_version_build(
                user=user, name=opts["name"], parent=parent, progress=bar, **options
            )
        except ApplicationError as exc:
            where = f" ({exc.field})" if exc.field else ""
            raise CommandError(f"{exc.message}{where}") from exc
        counts = version.counts
        self.stdout.write(
            f"dataset version {version.pk} {version.name!r}: {counts['train']} train, "
            f"{counts['eval']} eval, manifest {version.manifest_hash}"
        )
        if opts["verbosity"] > 1:
            self.stdout.write(json.dumps(counts["steps"], indent=2))
