from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.roles import Role
from reviews.services import default_queue, escalation_queue


def role_permissions() -> dict[str, set[str]]:
    """Every app's `role_permissions`, merged."""
    merged: dict[str, set[str]] = {role.value: set() for role in Role}
    for config in apps.get_app_configs():
        for role, perms in getattr(config, "role_permissions", {}).items():
            merged.setdefault(str(role), set()).update(perms)
    return merged


class Command(BaseCommand):
    help = "Create the role groups with their permissions, and the default queues. Idempotent."

    @transaction.atomic
    def handle(self, *args, **options):
        for role, perms in role_permissions().items():
            group, created = Group.objects.get_or_create(name=role)
            wanted = []
            for dotted in sorted(perms):
                app_label, codename = dotted.split(".", 1)
                perm = Permission.objects.filter(
                    content_type__app_label=app_label, codename=codename
                ).first()
                if perm is None:
                    raise CommandError(f"Unknown permission {dotted} (run migrate first).")
                wanted.append(perm)
            group.permissions.set(wanted)
            verb = "created" if created else "updated"
            if options["verbosity"] > 0:
                self.stdout.write(f"{verb} role {role}: {len(wanted)} permissions")
        default_queue()
        escalation_queue()
        if options["verbosity"] > 0:
            self.stdout.write(self.style.SUCCESS("roles and default queues ready"))
