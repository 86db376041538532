import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from reviews.models import Role

from .factories import UserFactory

ROLES = [role.value for role in Role]


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests (claim concurrency) run in the PostgreSQL pass of `make test`."""
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip = pytest.mark.skip(reason="needs PostgreSQL: runs in make test's PostgreSQL pass")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip)


@pytest.fixture
def roles(db):
    call_command("bootstrap_roles", verbosity=0)
    return {name: Group.objects.get(name=name) for name in ROLES}


@pytest.fixture
def make_user(roles):
    def make(role: str | None = None, **kwargs):
        user = UserFactory(**kwargs)
        if role:
            user.groups.add(roles[role])
        return user

    return make


@pytest.fixture
def personas(make_user):
    """One user per role, plus a second reviewer, the healthchecks way."""
    people = {role: make_user(role, username=role) for role in ROLES}
    people["reviewer2"] = make_user(Role.REVIEWER, username="reviewer2")
    people["outsider"] = make_user(None, username="outsider")
    return people


@pytest.fixture
def api():
    def client_for(user=None):
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return client_for


@pytest.fixture
def vendor():
    return connection.vendor
