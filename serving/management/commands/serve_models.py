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

    def handle(self, *args, host: str, port: int, **options):
        from serving.server import make_server

        server = make_server(host, port, merge_adapters=options["merged"] or None)
        self.stdout.write(f"model server on http://{host}:{port}/ (POST /generate, GET /health)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
