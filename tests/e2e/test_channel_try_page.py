"""The channel page's "Try it" form (the page twin of `POST /api/channels/{name}/generate/`,
answered in the background by the jobs worker): who may ask, what happens with nothing live or
no model server, and where the answer goes. The actor runs here by calling its function."""

import socket
import threading

import pytest

from demo.data import SYSTEM_PROMPT
from governance.models import Channel
from reviews.models import Output
from serving.models import ChannelTry
from serving.tasks import answer_channel_try

from ..training_app import conftest as training_fixtures
from ..training_app.test_governance_end_to_end import live_version

# The training tests' fixtures (tiny Llama, dataset versions, model folders), shared here.
tiny_model_dir = training_fixtures.tiny_model_dir
tiny_base_model = training_fixtures.tiny_base_model
training_dirs = training_fixtures.training_dirs
make_dataset_version = training_fixtures.make_dataset_version

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def model_server(settings):
    from serving.server import make_server

    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    settings.SIGNOFF_GOVERNANCE = {**settings.SIGNOFF_GOVERNANCE, "SERVING_URL": url}
    yield url
    server.shutdown()
    server.server_close()


def test_it_asks_the_live_version_and_shows_where_the_answer_went(
    client, personas, make_dataset_version, tiny_base_model, tiny_model_dir, training_dirs,
    tmp_path, model_server,
):  # fmt: skip
    version, channel = live_version(personas, make_dataset_version, tmp_path, tiny_model_dir)
    client.force_login(personas["deployer"])
    page = client.get(f"/training/channels/{channel.name}/").content.decode()
    assert "Try it" in page and f"/training/channels/{channel.name}/try/" in page

    response = client.post(
        f"/training/channels/{channel.name}/try/", {"prompt": "How far do you tow?"}
    )
    job = ChannelTry.objects.get()
    assert response.status_code == 302
    assert response.url == f"/training/channels/{channel.name}/try/{job.pk}/"
    busy = client.get(response.url).content.decode()
    assert "How far do you tow?" in busy and 'hx-trigger="every 2s"' in busy
    answer_channel_try.fn(str(job.pk))  # the jobs worker
    output = Output.objects.get(source=f"channel:{channel.name}")
    assert output.model_version == version.name
    # Asked the way the version was trained: the demo examples' system message first.
    assert output.input == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "How far do you tow?"},
    ]
    answer = client.get(response.url).content.decode()
    assert "How far do you tow?" in answer and f"output #{output.pk}" in answer
    assert output.get_status_display() in answer and "hx-trigger" not in answer
    assert f"/training/channels/{channel.name}/answers/{output.pk}/" in answer
    # Reloading the page shows the same answer; it does not ask again.
    assert client.get(response.url).status_code == 200
    assert client.get(f"/training/channels/{channel.name}/answers/{output.pk}/").status_code == 200
    assert Output.objects.filter(source=f"channel:{channel.name}").count() == 1


def test_it_refuses_roles_that_may_not_call_channels(client, personas, tiny_base_model):
    Channel.objects.create(name="production")
    client.force_login(personas["reviewer"])
    response = client.post("/training/channels/production/try/", {"prompt": "hi"})
    assert response.status_code == 403
    assert not Output.objects.exists()


def test_it_says_why_when_nothing_is_live_or_the_server_is_down(
    client, personas, settings, make_dataset_version, tiny_base_model, training_dirs, tmp_path
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.SIGNOFF_GOVERNANCE = {
        **settings.SIGNOFF_GOVERNANCE,
        "SERVING_URL": f"http://127.0.0.1:{port}",
    }
    Channel.objects.create(name="staging")
    client.force_login(personas["ml_engineer"])
    nothing = client.post("/training/channels/staging/try/", {"prompt": "hi"}, follow=True)
    assert "Nothing is live on staging" in nothing.content.decode()
    assert "Try it" not in nothing.content.decode()  # the form shows once something is live

    _version, channel = live_version(personas, make_dataset_version, tmp_path, None)
    empty = client.post(f"/training/channels/{channel.name}/try/", {"prompt": " "}, follow=True)
    assert "The prompt is empty." in empty.content.decode()
    asked = client.post(f"/training/channels/{channel.name}/try/", {"prompt": "hi"})
    answer_channel_try.fn(str(ChannelTry.objects.get().pk))  # the jobs worker
    down = client.get(asked.url).content.decode()
    assert "No answer" in down and "serve_models" in down
    assert client.get(f"/training/channels/{channel.name}/try/").status_code == 405
    assert not Output.objects.filter(source__startswith="channel:").exists()
