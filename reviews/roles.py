"""Who may do what: roles are Django groups, their rights are permissions.

Each app lists the permissions its roles get in its AppConfig (`role_permissions`), so that
`bootstrap_roles` collects them without this module knowing the later apps.
"""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from core.roles import Role, user_roles
from reviews.models import Queue

REVIEWS_ROLE_PERMISSIONS: dict[str, list[str]] = {
    Role.REVIEWER: ["reviews.work_queue", "reviews.view_queue"],
    Role.LEAD: [
        "reviews.work_queue",
        "reviews.lead_queue",
        "reviews.manage_queues",
        "reviews.view_queue",
        "reviews.view_output",
        "reviews.view_review",
    ],
    Role.ML_ENGINEER: [
        "reviews.add_output",
        "reviews.view_output",
        "reviews.view_review",
        "reviews.view_queue",
    ],
    Role.APPROVER: ["reviews.view_output", "reviews.view_review", "reviews.view_queue"],
    Role.DEPLOYER: ["reviews.view_queue"],
    Role.AUDITOR: [
        "reviews.view_output",
        "reviews.view_review",
        "reviews.view_queue",
    ],
    Role.ADMIN: [
        "reviews.work_queue",
        "reviews.lead_queue",
        "reviews.manage_queues",
        "reviews.add_output",
        "reviews.view_output",
        "reviews.view_review",
        "reviews.view_queue",
    ],
}


def can_work_queue(user: AbstractBaseUser | AnonymousUser, queue: Queue) -> bool:
    """Members of the queue's role work it; leads also work reviewer queues; admins all."""
    roles = user_roles(user)
    if Role.ADMIN in roles or queue.role in roles:
        return True
    return queue.role == Role.REVIEWER and Role.LEAD in roles
