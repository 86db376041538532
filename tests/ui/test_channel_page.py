"""Issue 18, item 8: the channel page after a deploy. No active Deploy button beside "no
version is signed off"; the rollback box has a title saying what it rolls back to; a "Taken
offline" row does not list the same version as both live and replaced."""

import re

import pytest

from governance.services import channel_rollback

from .conftest import deploy

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = [pytest.mark.django_db, pytest.mark.once]


def channel_page(client, world) -> str:
    client.force_login(world.people["deployer"])
    page = client.get(f"/training/channels/{world.channel.name}/").content.decode()
    return page[page.index("<main") :]


def history_rows(page: str) -> list[list[str]]:
    body = page[page.index("<h2>History</h2>") :]
    body = body[: body.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body[body.index("<tbody>") :], flags=re.S)
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in rows
    ]


def test_deploy_stays_while_another_signed_off_version_is_deployable(client, world, releases):
    first, second = releases
    page = channel_page(client, world)
    assert '<button type="submit" class="danger">Deploy</button>' in page
    deploy(world, first)
    deploy(world, second)
    # The only other signed-off version is now the one rolled back to, still approved: deployable.
    assert '<select name="version">' in channel_page(client, world)


def test_after_deploying_the_only_signed_off_version_deploy_is_gone(client, world, releases):
    first, _second = releases
    world.channel.signoff_requests.filter(status="approved").exclude(version=first).delete()
    deploy(world, first)
    page = channel_page(client, world)
    assert "no version is signed off" not in page
    assert "Deploy</button>" not in page and 'action="/training/channels/world/deploy/"' not in page
    assert (
        f"Nothing to deploy: no version other than {first.name}, which is live, is signed off "
        "for world." in page
    )


def test_a_channel_with_nothing_signed_off_says_so(client, world):
    page = channel_page(client, world)
    assert "Deploy</button>" not in page
    assert "Nothing to deploy: no version is signed off for world." in page


def test_the_rollback_box_says_what_it_rolls_back_to(client, world, releases):
    first, second = releases
    deploy(world, first)
    page = channel_page(client, world)
    assert "<h3>Roll back: take world offline</h3>" in page
    deploy(world, second)
    page = channel_page(client, world)
    assert f"<h3>Roll back to {first.name}</h3>" in page
    assert f"{first.name} was live before {second.name}" in page


def test_a_taken_offline_row_names_the_version_once(client, world, releases):
    first, _second = releases
    deploy(world, first)
    channel_rollback(user=world.people["deployer"], channel=world.channel, comment="bad answers")
    rows = history_rows(channel_page(client, world))
    offline, deployed = rows
    assert offline[1:4] == ["Taken offline", "nothing (offline)", first.name]
    assert deployed[1:4] == ["Deploy", first.name, "—"]
    assert "<th>Went live</th><th>Replaced</th>" in channel_page(client, world)
