import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection, connections
from rest_framework.test import APIClient

from core.roles import Role

from .audit_guard import flush_lifting_the_guard, lift_audit_guard
from .factories import UserFactory

ROLES = [role.value for role in Role]


_DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "live_server"}


def _uses_database(item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    return item.get_closest_marker("django_db") is not None or bool(fixtures & _DATABASE_FIXTURES)


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests (claim concurrency) run in the PostgreSQL pass of `make test`.

    The PostgreSQL pass repeats only what can differ there: a test that touches no database
    (pytest-django refuses it the connection), or is marked `once` (its database use is
    covered on both backends by other tests) or `sqlite`, ran in the SQLite pass already."""
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    needs_postgres = pytest.mark.skip(reason="needs PostgreSQL: runs in the PostgreSQL pass")
    ran_already = pytest.mark.skip(reason="backend-independent: ran in make test's SQLite pass")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(needs_postgres)
        elif on_postgres and (
            "once" in item.keywords or "sqlite" in item.keywords or not _uses_database(item)
        ):
            item.add_marker(ran_already)


@pytest.fixture(scope="session", autouse=True)
def _flushes_lift_the_audit_guard():
    """After each transactional test pytest-django empties the database with Django's flush, a
    TRUNCATE or DELETE of every table that the audit log's append-only triggers refuse: the
    suite's flushes lift them as the table owner would, and put them back."""
    operations = type(connections["default"].ops)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            operations,
            "execute_sql_flush",
            flush_lifting_the_guard(operations.execute_sql_flush),
        )
        yield


@pytest.fixture
def audit_guard_lifted(db):
    """For tests that tamper with the audit log as whoever lifts its append-only guard first
    (the table owner or a superuser on PostgreSQL, whoever can write the SQLite file): the
    verifier must still catch them. The test's transaction puts the guard back in any case."""
    with lift_audit_guard():
        yield


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
