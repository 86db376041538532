"""DRF permission classes read from the one policy table (core.permissions.POLICY)."""

from functools import cache

from rest_framework.permissions import BasePermission

from core.permissions import can, roles_for


@cache
def allowed(permission: str) -> type[BasePermission]:
    """A permission class letting through authenticated users who hold `permission`; the 403
    names the roles that do, in the table's order."""
    roles = roles_for(permission)

    class HoldsPermission(BasePermission):
        message = f"Requires one of the roles: {', '.join(roles)}."

        def has_permission(self, request, view) -> bool:
            return bool(
                request.user and request.user.is_authenticated and can(request.user, permission)
            )

    HoldsPermission.__name__ = f"Allowed[{permission}]"
    HoldsPermission.__qualname__ = HoldsPermission.__name__
    return HoldsPermission
