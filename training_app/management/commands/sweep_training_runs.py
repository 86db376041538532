"""Take back training runs whose worker stopped heartbeating (cron, or --every N)."""

import time

from django.core.management.base import BaseCommand

from training_app.services import training_runs_sweep


class Command(BaseCommand):
    help = "Re-queue runs with a stale heartbeat; fail them after the configured attempts."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0, help="Repeat every N seconds.")

    def handle(self, *args, every: float, **options):
        while True:
            done = training_runs_sweep()
            if any(done.values()) or options["verbosity"] > 1:
                self.stdout.write(str(done))
            if not every:
                return
            time.sleep(every)
