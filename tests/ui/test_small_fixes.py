"""Issue 18, item 10: a wrong password keeps the username; the admin says "Webhook
deliveries"; a cancelled version's environment is not a row of empty separators."""

import re

import pytest

from training_app.models import ModelVersion

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = [pytest.mark.django_db, pytest.mark.once]


def test_a_wrong_password_keeps_the_username(client, world):
    answer = client.post(
        "/accounts/login/", {"username": "deployer", "password": "not-the-password"}
    )
    page = answer.content.decode()
    assert answer.status_code == 200 and "Wrong username or password." in page
    [username] = re.findall(r'<input id="id_username"[^>]*>', page)
    assert 'value="deployer"' in username
    # The password is the field to fix, so it takes the focus.
    [password] = re.findall(r'<input id="id_password"[^>]*>', page)
    assert "autofocus" in password and "autofocus" not in username
    assert "value=" not in password


def test_the_empty_login_form_has_an_empty_username(client, db):
    page = client.get("/accounts/login/").content.decode()
    [username] = re.findall(r'<input id="id_username"[^>]*>', page)
    assert 'value=""' in username and "autofocus" in username


def test_the_admin_says_webhook_deliveries(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "Webhook deliveries" in page and "Webhook deliverys" not in page


def test_a_cancelled_version_says_why_it_has_no_environment(client, world):
    ModelVersion.objects.filter(pk=world.version.pk).update(status="cancelled", environment={})
    client.force_login(world.people["ml_engineer"])
    page = client.get(f"/training/versions/{world.version.pk}/").content.decode()
    assert "— (none: training cancelled before it finished)" in page
    assert " · · commit" not in page and "recorded when training finishes" not in page
