"""The model server beside the web server: answers channel prompts with the live version."""

from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the channels' live versions over HTTP (base + LoRA adapter, loaded once)."

    def add_arguments(self, parser):
        default = urlparse(settings.SIGNOFF_GOVERNANCE["SERVING_URL"])
        parser.add_argument("--host", default=default.hostname or "127.0.0.1")
        parser.add_argument("--port", type=int, default=default.port or 8765)
        parser.add_argument(
            "--merged",
            action="store_true",
            help="Fold each version's adapter into its own copy of the base (faster answers, "
            "more memory); default from SIGNOFF_SERVING_MERGED=1.",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="Model server processes answering at once, each with its own copy of the "
            "weights (default: SIGNOFF_SERVING_WORKERS, 'auto' = one per core, at most 2). 1: one "
            "threaded process answering one question at a time.",
        )

    def handle(self, *args, host: str, port: int, **options):
        from django.core.management.base import CommandError

        from serving.server import default_workers, make_server, serve_workers

        workers = options["workers"] if options["workers"] is not None else default_workers()
        if workers < 1:
            raise CommandError("--workers: at least 1")
        merge_adapters = options["merged"] or None
        if workers > 1:
            self.stdout.write(
                f"model server on http://{host}:{port}/ (POST /generate, GET /health), "
                f"{workers} worker processes"
            )
            self.stdout.flush()
            serve_workers(host, port, workers=workers, merge_adapters=merge_adapters)
            return
        server = make_server(host, port, merge_adapters=merge_adapters)
        self.stdout.write(f"model server on http://{host}:{port}/ (POST /generate, GET /health)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
