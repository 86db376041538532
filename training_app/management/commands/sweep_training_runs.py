"""Take back training runs and evaluations whose worker stopped heartbeating, and send again
the messages of queued ones that the broker lost (cron, or --every N)."""

import time

from django.core.management.base import BaseCommand

from training_app.services import training_runs_sweep
from training_app.services.evaluations import evaluations_sweep


class Command(BaseCommand):
    help = (
        "Re-queue runs and evaluations with a stale heartbeat (failing them after the "
        "configured attempts); resend the lost messages of queued ones."
    )

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0, help="Repeat every N seconds.")

    def handle(self, *args, every: float, **options):
        while True:
            done = {"runs": training_runs_sweep(), "evaluations": evaluations_sweep()}
            if any(any(sweep.values()) for sweep in done.values()) or options["verbosity"] > 1:
                self.stdout.write(str(done))
            if not every:
                return
            time.sleep(every)
