"""The one permission table (core.permissions.POLICY): what it grants, and what it refuses."""

import pytest
from django.contrib.auth.models import AnonymousUser

from core.api.permissions import allowed
from core.permissions import POLICY, can, roles_for
from core.roles import Role

# Deploying stays with deployers, admins included: who configures a channel does not also put
# versions live on it (separation of duties).
NOT_FOR_ADMINS = {"channel.deploy"}


@pytest.mark.parametrize("permission", sorted(POLICY))
def test_every_permission_names_known_roles_once(permission):
    roles = roles_for(permission)
    assert roles, permission
    assert all(isinstance(role, Role) for role in roles), permission
    assert len(set(roles)) == len(roles), permission


def test_an_unknown_permission_is_a_programming_error(db, personas):
    with pytest.raises(KeyError, match="no_such"):
        can(personas["admin"], "no_such")


@pytest.mark.parametrize("permission", sorted(POLICY))
def test_a_user_without_a_role_is_refused_every_permission(db, personas, permission):
    assert not can(personas["outsider"], permission)
    assert not can(AnonymousUser(), permission)


@pytest.mark.parametrize("permission", sorted(POLICY))
def test_admins_hold_every_permission_but_deploying(db, personas, make_user, permission):
    superuser = make_user(None, username="root", is_superuser=True)
    expected = permission not in NOT_FOR_ADMINS
    assert can(personas["admin"], permission) is expected
    assert can(superuser, permission) is expected


@pytest.mark.parametrize("role", [role.value for role in Role])
def test_each_role_holds_exactly_its_permissions(db, personas, role):
    held = {permission for permission in POLICY if can(personas[role], permission)}
    assert held == {permission for permission, roles in POLICY.items() if role in roles}


# The API's 403 names the roles in the table's order; clients and tests read these words.
@pytest.mark.parametrize(
    ("permission", "message"),
    [
        ("any_role", "reviewer, lead, ml_engineer, approver, deployer, auditor, admin"),
        ("queues.work", "reviewer, lead, admin"),
        ("queues.manage", "lead, admin"),
        ("outputs.read", "lead, admin, auditor, ml_engineer, approver"),
        ("routing.read", "lead, admin, auditor, ml_engineer"),
        ("datasets.read", "ml_engineer, admin, auditor, approver"),
        ("training.view", "ml_engineer, approver, deployer, auditor, admin"),
        ("channel.generate", "ml_engineer, deployer, admin"),
        ("channel.deploy", "deployer"),
        ("audit.read", "auditor, admin"),
    ],
)
def test_the_api_refusal_names_the_roles_in_table_order(permission, message):
    assert allowed(permission).message == f"Requires one of the roles: {message}."
