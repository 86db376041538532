"""What issue 16's restructuring must leave as it is, taken on the code before it: the OpenAPI
schema, every URL's route and name, the management commands' names, and no model change
without its migration. A failure lists what changed; a change made on purpose is accepted by
refreshing the snapshots (tests/snapshots/__init__.py says how)."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command, get_commands
from django.urls import URLPattern, URLResolver, get_resolver

from tests.snapshots import check_snapshot, differences

# The schema, URLs and commands come from Python alone, the same on every database.
pytestmark = pytest.mark.once


def project_app_names() -> set[str]:
    """Our apps, whatever they are called after a move: those whose code is in this checkout
    (an installed package lives under site-packages, even in the checkout's .venv)."""
    root = Path(settings.BASE_DIR).resolve()
    names = set()
    for app in apps.get_app_configs():
        path = Path(app.path).resolve()
        if path.is_relative_to(root) and "site-packages" not in path.parts:
            names.add(app.name)
    return names


def url_routes() -> list[dict[str, str | None]]:
    """Every URL pattern: its full route (the patterns' text joined, as Django matches it) and
    its name with the namespaces it is reversed by (`admin:index`), or null when unnamed."""
    routes = []

    def walk(patterns, prefix: str, namespace: str) -> None:
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                inner = namespace
                if entry.namespace:
                    inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
                walk(entry.url_patterns, route, inner)
            elif isinstance(entry, URLPattern):
                name = entry.name
                if name and namespace:
                    name = f"{namespace}:{name}"
                routes.append({"route": route, "name": name})

    walk(get_resolver().url_patterns, "", "")
    return sorted(routes, key=lambda row: (row["route"], row["name"] or ""))


def test_the_openapi_schema_is_unchanged(client):
    answer = client.get("/api/schema/?format=json")
    assert answer.status_code == 200
    schema = json.loads(answer.content)
    assert "/api/outputs/" in schema["paths"]
    check_snapshot("openapi.json", schema)


def test_every_url_keeps_its_route_and_name():
    routes = url_routes()
    names = {row["name"] for row in routes}
    assert {"schema", "api-outputs", "admin:index", "training:channels"} <= names
    check_snapshot("urls.json", routes)


def test_the_management_commands_keep_their_names():
    ours = project_app_names()
    assert {"reviews", "datasets_app", "training_app"} <= ours
    # Names only: a command may move to another app, its name is what operators type.
    commands = sorted(name for name, app in get_commands().items() if app in ours)
    assert "seed_demo" in commands and "migrate" not in commands
    check_snapshot("commands.json", commands)


@pytest.mark.django_db  # makemigrations checks the applied history against the database
def test_no_model_change_lacks_its_migration():
    report = StringIO()
    try:
        call_command("makemigrations", check=True, dry_run=True, stdout=report, stderr=report)
        changed = False
    except SystemExit:  # --check exits 1 after printing what a migration would hold
        changed = True
    if changed:
        pytest.fail(
            "Models changed without a migration (write one: manage.py makemigrations):\n"
            + report.getvalue(),
            pytrace=False,
        )
    assert "No changes detected" in report.getvalue()


def test_a_difference_says_where_it_is():
    recorded = {
        "paths": {"/api/a/": {"get": {"parameters": [{"name": "q", "in": "query"}]}}},
        "urls": [{"route": "a/", "name": "a"}, {"route": "b/", "name": "b"}],
    }
    required = {"name": "q", "in": "query", "required": True}
    current = {
        "paths": {"/api/a/": {"get": {"parameters": [required]}, "post": {}}},
        "urls": [{"route": "a/", "name": "a"}, {"route": "a2/", "name": "a2"}],
    }
    assert sorted(differences(recorded, current)) == [
        """+ paths['/api/a/'].get.parameters[0].required: true""",
        """+ paths['/api/a/'].post: {}""",
        """+ urls[]: {"route": "a2/", "name": "a2"}""",
        """- urls[]: {"route": "b/", "name": "b"}""",
    ]
