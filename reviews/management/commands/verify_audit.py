from django.core.management.base import BaseCommand, CommandError

from reviews.errors import AuditChainBroken
from reviews.services import audit_verify


class Command(BaseCommand):
    help = "Verify the whole audit hash chain; exit non-zero naming the first broken event."

    def handle(self, *args, **options):
        try:
            count = audit_verify()
        except AuditChainBroken as broken:
            raise CommandError(
                f"audit chain BROKEN at event #{broken.seq}: {broken.message}"
            ) from None
        self.stdout.write(self.style.SUCCESS(f"audit chain intact: {count} events verified"))
