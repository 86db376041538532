from django.http import HttpRequest

from .roles import user_roles


def roles(request: HttpRequest) -> dict:
    """The user's roles, so the navigation offers only the pages they may open."""
    names = user_roles(request.user) if hasattr(request, "user") else set()
    return {
        "nav": {
            "reviews": bool(names & {"reviewer", "lead", "admin"}),
            "data": bool(names & {"ml_engineer", "admin", "auditor", "approver"}),
            "governance": bool(names & {"ml_engineer", "approver", "deployer", "auditor", "admin"}),
            "audit": bool(names & {"auditor", "admin"}),
        }
    }
