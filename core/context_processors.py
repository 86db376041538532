from django.http import HttpRequest

from .permissions import can

# Each navigation section, and the permission that opens its pages.
NAV_SECTIONS = {
    "reviews": "queues.work",
    "data": "datasets.read",
    "governance": "training.view",
    "audit": "audit.read",
}


def roles(request: HttpRequest) -> dict:
    """The user's roles, so the navigation offers only the pages they may open."""
    user = getattr(request, "user", None)
    return {
        "nav": {
            section: user is not None and can(user, permission)
            for section, permission in NAV_SECTIONS.items()
        }
    }
