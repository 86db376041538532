"""Periodic upkeep, for cron or `--every N` (the demo runs it every 30 s): take back training
runs whose worker went silent, check live versions for drift, and send again webhook deliveries
whose broker message was lost. Each step is idempotent, so overlapping runs are harmless."""

import time

from django.core.management.base import BaseCommand

from training_app.services import training_runs_sweep
from training_app.services.monitoring import drift_check_all
from training_app.services.webhooks import webhook_deliveries_due
from training_app.tasks import deliver_webhook


def maintenance_once() -> dict[str, object]:
    runs = training_runs_sweep()
    alerts = drift_check_all()
    due = webhook_deliveries_due()
    for delivery_id in due:
        # The delivery claims its attempt in the database, so a message that was not lost
        # after all makes the second send a no-op.
        deliver_webhook.send(delivery_id)
    return {"runs": runs, "drift_alerts": len(alerts), "webhooks_resent": len(due)}


class Command(BaseCommand):
    help = "Sweep stale training runs, check drift, resend due webhook deliveries."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0, help="Repeat every N seconds.")

    def handle(self, *args, every: float, **options):
        while True:
            done = maintenance_once()
            busy = any(done["runs"].values()) or done["drift_alerts"] or done["webhooks_resent"]
            if busy or options["verbosity"] > 1:
                self.stdout.write(str(done))
            if not every:
                return
            time.sleep(every)
