"""The roles: Django groups of these names (`manage.py bootstrap_roles` creates them), and who
holds which. What each role may do is the policy in `core.permissions`."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models


class Role(models.TextChoices):
    """Roles are Django groups of these names; `manage.py bootstrap_roles` creates them."""

    REVIEWER = "reviewer", "Reviewer"
    LEAD = "lead", "Lead"
    ML_ENGINEER = "ml_engineer", "ML engineer"
    APPROVER = "approver", "Approver"
    DEPLOYER = "deployer", "Deployer"
    AUDITOR = "auditor", "Auditor"
    ADMIN = "admin", "Admin"


def user_roles(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_signoff_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))  # type: ignore[union-attr]
        if user.is_superuser:  # type: ignore[union-attr]
            cached.add(Role.ADMIN)
        user._signoff_roles = cached  # type: ignore[union-attr]
    return cached


def has_role(user: AbstractBaseUser | AnonymousUser, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))
