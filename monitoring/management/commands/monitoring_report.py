"""Print live versions' review figures (the monitoring page's and the API's) for scripts."""

import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from monitoring.selectors import RATES, overview_figures, version_figures
from monitoring.services.drift import drift_check_all
from training_app.selectors import model_version_get


class Command(BaseCommand):
    help = "Review figures of live versions (or one version) per day/week, with Wilson intervals."

    def add_arguments(self, parser):
        parser.add_argument("--bucket", choices=["day", "week"], default="day")
        parser.add_argument("--since", help="ISO 8601 date: only reviews from then on.")
        parser.add_argument(
            "--model-version", dest="version", help="One model version's id, on every channel."
        )
        parser.add_argument("--json", action="store_true", help="JSON, as the API answers.")
        parser.add_argument(
            "--check-drift",
            action="store_true",
            help="Raise the drift alerts due (each is raised once) before printing.",
        )

    def handle(self, *args, **options):
        since = None
        if options["since"]:
            try:
                since = datetime.fromisoformat(options["since"])
            except ValueError as exc:
                raise CommandError(f"--since: not an ISO 8601 date ({exc})") from exc
            if since.tzinfo is None:
                from django.utils import timezone

                since = timezone.make_aware(since)
        raised = drift_check_all() if options["check_drift"] else []
        if options["version"]:
            try:
                version = model_version_get(version_id=options["version"])
            except (ApplicationError, ValueError) as exc:
                raise CommandError(f"--model-version: {exc}") from exc
            figures = version_figures(version=version, bucket=options["bucket"], since=since)
            blocks = [
                {**c, "version": figures["version"], "predicted": figures["predicted"]}
                for c in figures["channels"]
            ]
            data = figures
        else:
            blocks = overview_figures(bucket=options["bucket"], since=since)
            data = {"channels": blocks}
        if options["json"]:
            data["alerts_raised"] = [a.pk for a in raised]
            self.stdout.write(json.dumps(data, indent=2, default=str))
            return
        for alert in raised:
            self.stdout.write(
                f"ALERT raised: {alert.metric} drift of {alert.version.name} on "
                f"{alert.channel.name}: {alert.observed:.1%} vs {alert.baseline:.1%}"
            )
        if not blocks:
            self.stdout.write("Nothing is live.")
        for block in blocks:
            self._table(block)

    def _table(self, block):
        head = f"{block['channel']} · {block['version']['name']}"
        self.stdout.write(head)
        self.stdout.write("=" * len(head))
        header = f"{'bucket':<12}{'reviewed':>9}" + "".join(f"{r:>26}" for r in RATES)
        self.stdout.write(header)
        rows = [
            *block["buckets"],
            {"start": "total", "reviewed": block["reviewed"], **block["rates"]},
        ]
        for row in rows:
            cells = []
            for name in RATES:
                r = row[name]
                if r["rate"] is None:
                    cells.append(f"{'—':>26}")
                else:
                    cells.append(
                        f"{r['rate']:>7.1%} ({r['ci_low']:.1%}-{r['ci_high']:.1%})".rjust(26)
                    )
            self.stdout.write(f"{row['start'][:10]:<12}{row['reviewed']:>9}" + "".join(cells))
        drift = block.get("drift")
        if drift:
            for metric, d in drift["metrics"].items():
                state = "DRIFTED" if d["drifted"] else "ok"
                rate = "—" if d["rate"] is None else f"{d['rate']:.1%}"
                self.stdout.write(
                    f"drift {metric}: {rate} over {drift['samples']} (last {drift['window_days']} "
                    f"days) vs threshold {d['threshold']:.1%} ({d['baseline_source']}): {state}"
                )
        self.stdout.write("")
