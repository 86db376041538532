"""Periodic upkeep, for cron or `--every N` (the demo runs it every 30 s): take back training
runs, evaluations, dataset builds and "Try it" questions whose worker went silent, send again
the broker messages of queued jobs that Redis lost (restarted empty), turn newly reviewed
outputs into examples, check live versions for drift, and send again webhook deliveries whose
broker message was lost. Each step is idempotent, so overlapping runs are harmless: the
database is the source of truth and a duplicate message does nothing."""

import time
from typing import Any

from django.core.management.base import BaseCommand

from datasets_app.services import dataset_builds_recover, examples_sync
from training_app.services import training_runs_sweep
from training_app.services.channel_try import channel_tries_sweep
from training_app.services.evaluations import evaluations_sweep
from training_app.services.monitoring import drift_check_all
from training_app.services.webhooks import webhook_deliveries_due
from training_app.tasks import deliver_webhook


def maintenance_once() -> dict[str, Any]:
    runs = training_runs_sweep()
    evaluations = evaluations_sweep()
    builds = dataset_builds_recover()
    tries = channel_tries_sweep()
    # Reviewed outputs become examples here too, so a build only syncs what arrived since.
    synced = examples_sync()
    alerts = drift_check_all()
    due = webhook_deliveries_due()
    for delivery_id in due:
        # The delivery claims its attempt in the database, so a message that was not lost
        # after all makes the second send a no-op.
        deliver_webhook.send(delivery_id)
    return {
        "runs": runs,
        "evaluations": evaluations,
        "dataset_builds": builds,
        "channel_tries": tries,
        "examples_synced": synced.created,
        "drift_alerts": len(alerts),
        "webhooks_resent": len(due),
    }


def is_busy(done: dict[str, Any]) -> bool:
    sweeps = (done["runs"], done["evaluations"], done["dataset_builds"], done["channel_tries"])
    swept = any(ids for sweep in sweeps for ids in sweep.values())
    return swept or bool(done["examples_synced"] or done["drift_alerts"] or done["webhooks_resent"])


_SWEEP_NAMES = {
    "runs": "training runs",
    "evaluations": "evaluations",
    "dataset_builds": "dataset builds",
    "channel_tries": '"Try it" questions',
}


def describe(done: dict[str, Any]) -> str:
    """One line naming only what this pass did, for a terminal people read (the demo's)."""
    parts = []
    for key, name in _SWEEP_NAMES.items():
        for action, ids in done[key].items():
            if ids:
                parts.append(f"{name} {action}: {', '.join(str(pk) for pk in ids)}")
    if done["examples_synced"]:
        parts.append(f"{done['examples_synced']} reviewed outputs became examples")
    if done["drift_alerts"]:
        parts.append(f"{done['drift_alerts']} drift alerts raised")
    if done["webhooks_resent"]:
        parts.append(f"{done['webhooks_resent']} webhook deliveries sent again")
    return "maintenance: " + ("; ".join(parts) if parts else "nothing to do")


class Command(BaseCommand):
    help = (
        "Sweep stale training runs, evaluations, dataset builds and Try it questions, resend "
        "lost job messages, "
        "sync examples, check drift, resend due webhook deliveries."
    )

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0, help="Repeat every N seconds.")

    def handle(self, *args, every: float, **options):
        while True:
            done = maintenance_once()
            if is_busy(done) or options["verbosity"] > 1:
                self.stdout.write(describe(done))
            if not every:
                return
            time.sleep(every)
