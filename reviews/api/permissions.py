from rest_framework.permissions import BasePermission

from ..roles import has_role


def roles_allowed(*roles: str) -> type[BasePermission]:
    """A permission class letting through authenticated users holding any of `roles`."""

    class HasRole(BasePermission):
        message = f"Requires one of the roles: {', '.join(roles)}."

        def has_permission(self, request, view) -> bool:
            return bool(
                request.user and request.user.is_authenticated and has_role(request.user, *roles)
            )

    HasRole.__name__ = "HasRole_" + "_".join(roles)
    return HasRole
