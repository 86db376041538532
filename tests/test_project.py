"""Project-level promises: production settings pass Django's deployment checks, commands work."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from reviews.models import Output, Queue, RoutingRule
from tests.waiting import REQUEST_SECONDS

ROOT = Path(__file__).resolve().parent.parent


def test_production_settings_pass_check_deploy_without_warnings(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "signoff.example.com",
        "SIGNOFF_VAR_DIR": str(tmp_path),
    }
    env.pop("DATABASE_URL", None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set for the browser tests' event loop
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=REQUEST_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "ALLOWED_HOSTS": "x",
        "SIGNOFF_VAR_DIR": str(tmp_path),
    }
    env.pop("SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=REQUEST_SECONDS,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.django_db
def test_bootstrap_roles_is_idempotent():
    call_command("bootstrap_roles", verbosity=0)
    first = {
        g.name: set(g.permissions.values_list("codename", flat=True)) for g in Group.objects.all()
    }
    call_command("bootstrap_roles", verbosity=0)
    second = {
        g.name: set(g.permissions.values_list("codename", flat=True)) for g in Group.objects.all()
    }
    assert first == second
    assert set(first) == {
        "reviewer",
        "lead",
        "ml_engineer",
        "approver",
        "deployer",
        "auditor",
        "admin",
    }
    assert "view_audit_log" in first["auditor"] and "work_queue" not in first["auditor"]
    assert Queue.objects.filter(kind="escalation").count() == 1


@pytest.mark.django_db
def test_create_api_token_prints_the_users_token(personas, capsys):
    call_command("create_api_token", "ml_engineer")
    key = capsys.readouterr().out.strip()
    assert Token.objects.get(user=personas["ml_engineer"]).key == key
    call_command("create_api_token", "ml_engineer")
    assert capsys.readouterr().out.strip() == key
    with pytest.raises(CommandError, match="No user"):
        call_command("create_api_token", "nobody")


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_routes_through_the_rules(capsys):
    call_command("seed_demo", outputs=120)
    out = capsys.readouterr().out
    assert "120 new" in out and "reviewer-demo-pass" in out
    call_command("seed_demo", outputs=120)
    assert "0 new, 120 already there" in capsys.readouterr().out
    assert Output.objects.count() == 120
    assert RoutingRule.objects.count() == 4
    routed = set(Output.objects.exclude(queue=None).values_list("queue__name", flat=True))
    assert {"low-confidence", "audit-sample"} <= routed
    assert Output.objects.filter(status="auto_accepted").exists()


@pytest.mark.django_db
def test_home_page_lists_the_queues_a_reviewer_works(client, personas):
    Queue.objects.create(name="visible-queue")
    assert client.get("/").status_code == 302
    client.force_login(personas["reviewer"])
    page = client.get("/")
    assert page.status_code == 200
    assert b"visible-queue" in page.content and b"escalations" not in page.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "shown", "hidden"),
    [
        ("reviewer", ["My reviews"], ["Datasets", "Channels", "Audit"]),
        ("auditor", ["Datasets", "Channels", "Audit"], ["My reviews"]),
        ("deployer", ["Channels"], ["Datasets", "Audit", "My reviews"]),
    ],
)
def test_the_navigation_offers_only_pages_the_role_may_open(client, personas, role, shown, hidden):
    client.force_login(personas[role])
    nav = client.get("/").content.decode().split('<nav aria-label="Main">')[1].split("</nav>")[0]
    for label in shown:
        assert f">{label}</a>" in nav
    for label in hidden:
        assert f">{label}</a>" not in nav
