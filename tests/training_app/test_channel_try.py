"""The channel page's "Try it" answered in the background: the form answers at once with a busy
fragment that polls, a worker asks the model server (a fake here: no torch) through the same
service as the API, and the answer is kept even when the browser has gone."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dramatiq
import pytest
from django_dramatiq.middleware import DbConnectionsMiddleware

from datasets_app.selectors import dataset_version_system_prompt
from governance.services import channel_deploy, signoff_decide, signoff_request_create
from reviews.models import Output
from serving.models import ChannelTry
from serving.services.channel_try import channel_try_create
from serving.tasks import answer_channel_try
from training_app.models import BaseModel

from ..reliability.conftest import make_dataset
from .governance_helpers import make_channel, make_version

SYSTEM = "You are Harbor Mutual's assistant. Answer in two sentences."


class FakeModelServer:
    """Answers /generate like the model server, recording what it was sent."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.fail: tuple[int, dict] | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.received.append(body)
                status, answer = owner.fail or (
                    200,
                    {
                        "text": "We tow up to 50 miles.",
                        "tokens": 7,
                        "confidence": 0.9,
                        "seconds": 0.01,
                        "version_id": body["version_id"],
                        "version_name": "v",
                        "manifest_digest": "0" * 64,
                    },
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def model_server(settings):
    server = FakeModelServer()
    settings.SIGNOFF_GOVERNANCE = {**settings.SIGNOFF_GOVERNANCE, "SERVING_URL": server.url}
    yield server
    server.close()


@pytest.fixture
def live(personas, training_dirs, settings):
    """A channel with a live version trained on [system, user, assistant] examples."""
    BaseModel.objects.create(
        name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"],
        folder=str(training_dirs / "base"),
        architecture="LlamaForCausalLM",
        weight_sha256={"model.safetensors": "0" * 64},
    )
    dataset = make_dataset(personas["ml_engineer"], name="try")
    for member in dataset.members.all():
        member.messages = [{"role": "system", "content": SYSTEM}, *member.messages]
        member.save(update_fields=["messages"])
    version = make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=training_dirs
    )
    channel = make_channel("production")
    request = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
    )
    request.evaluations.update(status="done", metrics={"candidate": {}, "reference": {}})
    signoff_decide(user=personas["approver"], request=request, decision="approve", comment="ok")
    channel_deploy(user=personas["deployer"], channel=channel, version=version)
    return version, channel


def ask(client, channel, prompt="How far do you tow?"):
    return client.post(
        f"/training/channels/{channel.name}/try/",
        {"prompt": prompt},
        headers={"HX-Request": "true"},
    )


def fragment(client, job):
    return client.get(
        f"/training/channels/{job.channel.name}/try/{job.pk}/", headers={"HX-Request": "true"}
    ).content.decode()


@pytest.mark.django_db(transaction=True)
def test_it_answers_at_once_with_a_busy_fragment_then_the_worker_answers(
    client, personas, live, model_server
):
    version, channel = live
    client.force_login(personas["deployer"])
    broker = dramatiq.get_broker()
    broker.flush_all()

    busy = ask(client, channel)
    job = ChannelTry.objects.get()
    html = busy.content.decode()
    assert busy.status_code == 200 and job.status == "queued" and job.version == version
    assert 'hx-trigger="every 2s"' in html and f"/try/{job.pk}/" in html
    assert "waiting for a worker" in html and "How far do you tow?" in html
    assert not Output.objects.filter(source="channel:production").exists()
    assert broker.queues["default"].qsize() == 1  # the jobs worker's queue

    # The worker thread's database connection is closed when it stops (PostgreSQL refuses to
    # drop a test database that a connection still holds).
    closer = DbConnectionsMiddleware()
    broker.add_middleware(closer)
    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.start()
    try:
        broker.join("default", fail_fast=True)
        worker.join()
    finally:
        worker.stop()
        broker.middleware.remove(closer)

    job.refresh_from_db()
    output = Output.objects.get(source="channel:production")
    assert job.status == "done" and job.output == output and job.error == ""
    assert output.model_version == version.name
    assert output.input == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "How far do you tow?"},
    ]
    answered = fragment(client, job)
    assert "We tow up to 50 miles." in answered and f"output #{output.pk}" in answered
    assert "hx-trigger" not in answered  # done: it stops polling
    assert output.get_status_display() in answered
    # The channel page lists the asker's recent questions, linking back to the answer.
    page = client.get(f"/training/channels/{channel.name}/").content.decode()
    assert "Your recent questions" in page and f"/try/{job.pk}/" in page


@pytest.mark.django_db
def test_it_sends_the_system_prompt_the_version_was_trained_with(live, model_server, personas):
    version, channel = live
    assert dataset_version_system_prompt(version_id=version.dataset_version_id) == SYSTEM
    job = channel_try_create(user=personas["ml_engineer"], channel=channel, prompt="Hi?")
    answer_channel_try.fn(str(job.pk))
    (sent,) = model_server.received
    assert sent["messages"][0] == {"role": "system", "content": SYSTEM}
    assert sent["messages"][1:] == [{"role": "user", "content": "Hi?"}]


@pytest.mark.django_db
def test_a_callers_own_system_message_is_kept(live, model_server, personas, api):
    _version, channel = live
    own = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi?"}]
    response = api(personas["ml_engineer"]).post(
        f"/api/channels/{channel.name}/generate/", {"prompt": own}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert model_server.received[0]["messages"] == own


@pytest.mark.django_db
def test_the_api_answers_synchronously_with_the_training_system_prompt(
    live, model_server, personas, api
):
    _version, channel = live
    response = api(personas["ml_engineer"]).post(
        f"/api/channels/{channel.name}/generate/", {"prompt": "Hi?"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["answer"] == "We tow up to 50 miles."
    assert model_server.received[0]["messages"][0]["content"] == SYSTEM
    assert not ChannelTry.objects.exists()


@pytest.mark.django_db
def test_a_job_whose_browser_went_away_still_records_its_output(live, model_server, personas):
    _version, channel = live
    job = channel_try_create(user=personas["ml_engineer"], channel=channel, prompt="Hi?")
    # Nobody polls: the worker alone finishes it.
    answer_channel_try.fn(str(job.pk))
    job.refresh_from_db()
    assert job.status == "done"
    assert Output.objects.get(pk=job.output_id).source == f"channel:{channel.name}"


@pytest.mark.django_db
def test_the_actor_run_twice_records_one_output(live, model_server, personas):
    _version, channel = live
    job = channel_try_create(user=personas["ml_engineer"], channel=channel, prompt="Hi?")
    answer_channel_try.fn(str(job.pk))
    answer_channel_try.fn(str(job.pk))
    assert Output.objects.filter(source=f"channel:{channel.name}").count() == 1
    assert len(model_server.received) == 1


@pytest.mark.django_db
def test_a_taken_over_job_does_not_record_a_second_output(live, model_server, personas):
    """A worker died after recording the output: the redelivery finds the same output."""
    from datetime import timedelta

    from django.utils import timezone

    _version, channel = live
    job = channel_try_create(user=personas["ml_engineer"], channel=channel, prompt="Hi?")
    answer_channel_try.fn(str(job.pk))
    long_ago = timezone.now() - timedelta(days=1)
    ChannelTry.objects.filter(pk=job.pk).update(status="running", started_at=long_ago)
    answer_channel_try.fn(str(job.pk))
    job.refresh_from_db()
    assert job.status == "done"
    assert Output.objects.filter(source=f"channel:{channel.name}").count() == 1


@pytest.mark.django_db
def test_a_failed_generation_shows_the_error(client, live, model_server, personas):
    _version, channel = live
    model_server.fail = (409, {"detail": "v is retired, not signed off"})
    client.force_login(personas["ml_engineer"])
    ask(client, channel)
    job = ChannelTry.objects.get()
    answer_channel_try.fn(str(job.pk))
    job.refresh_from_db()
    assert job.status == "failed" and "not signed off" in job.error
    html = fragment(client, job)
    assert "No answer" in html and "not signed off" in html and "hx-trigger" not in html
    assert not Output.objects.filter(source=f"channel:{channel.name}").exists()


@pytest.mark.django_db
def test_a_user_who_may_not_try_the_channel_is_refused(client, live, model_server, personas):
    _version, channel = live
    client.force_login(personas["reviewer"])
    assert ask(client, channel).status_code == 403
    assert not ChannelTry.objects.exists()
    job = channel_try_create(user=personas["ml_engineer"], channel=channel, prompt="Hi?")
    assert client.get(f"/training/channels/{channel.name}/try/{job.pk}/").status_code == 403
    # Another caller may not read someone else's question either.
    client.force_login(personas["deployer"])
    assert client.get(f"/training/channels/{channel.name}/try/{job.pk}/").status_code == 404


@pytest.mark.django_db
def test_a_refusal_shows_in_the_fragment_and_queues_nothing(client, live, personas):
    _version, channel = live
    client.force_login(personas["ml_engineer"])
    html = ask(client, channel, prompt=" ").content.decode()
    assert "The prompt is empty." in html and "hx-trigger" not in html
    assert not ChannelTry.objects.exists()
