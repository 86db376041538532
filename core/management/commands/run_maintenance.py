"""Periodic upkeep, for cron or `--every N` (the demo runs it every 30 s): take back training
runs, evaluations, dataset builds and "Try it" questions whose worker went silent, send again
the broker messages of queued jobs that Redis lost (restarted empty), turn newly reviewed
outputs into examples, check live versions for drift, and send again webhook deliveries whose
broker message was lost. Each app registers its own steps (core/maintenance.py); each step is
idempotent, so overlapping runs are harmless: the database is the source of truth and a
duplicate message does nothing."""

import time

from django.core.management.base import BaseCommand

from core.maintenance import describe, is_busy, maintenance_once


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
