"""Issue 22, part 2: one turn of the loop, end to end, against the processes `make demo` runs.

    .venv/bin/python bench/bench_loop.py              # N = 120 before, 120 after (~20 min)
    .venv/bin/python bench/bench_loop.py --quick      # N = 12 (minutes, not a measurement)

What runs: `manage.py run_demo` (runserver, the training worker, the jobs worker, maintenance
and the model server, with an embedded Redis) on a scratch SQLite database in SIGNOFF_VAR_DIR
(default var/), with the base model `manage.py prepare_base_model` prepared there. Everything
below goes through the HTTP API with each person's token, as a person or a script would:

0. setup (untimed): users (reviewer, ml_engineer, approver, approver2, deployer), one review
   queue that every output is routed to, the `production` channel (two approvals, the demo's
   regression set).
1. base version: the channel needs something live to answer. "loop-base" is trained from 8
   reviewed demo outputs for one step at learning rate 1e-7: its LoRA starts at zero (peft's
   B matrix) and one step that small leaves it at ~1e-7, so it answers as the bare base model
   does. It passes sign-off (two approvers) and is deployed like any version.
2. before: N fresh demo questions (`demo_items(N, seed=101)`, the demo's system prompt) go to
   `POST /api/channels/production/generate/`; each answer is recorded and routed to review.
3. review: the reviewer claims (`POST /api/queues/{id}/claim/`) and decides
   (`POST /api/reviews/`) by the demo generator's own rule: approve when the answer is the
   house-style answer for that question word for word (lower-cased, punctuation ignored:
   `training_app.training.evaluate.normalise`), else correct it to that answer.
4. dataset: `POST /api/datasets/` from the reviewed answers of the base version.
5. train: `POST /api/training-runs/` with no hyperparameters: run creation fits the schedule
   to the dataset's size (`training_app.training.recipe.fit_to_data`; recorded as the run's
   `recipe`), then the worker's evaluation.
6. sign-off: `POST /api/model-versions/{id}/signoff-requests/`, the gate's evaluations against
   the live base version, two approvals.
7. deploy: `POST /api/channels/production/deploy/`.
8. after: N new questions (`seed=202`), answered by the new version, reviewed by the same rule.

Reported: the correction rate before and after with Wilson 95 % intervals
(monitoring.selectors.wilson_interval), the same figures as `GET /api/monitoring/versions/{id}/`
gives for the two versions (the monitoring page shows these), wall time per stage and in all,
and the load average. With SIGNOFF_TORCH_LOCK set (a file path) the stages where torch
computes (training, evaluations, answering) hold that lock (flock), and reviews do not.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import headline, setup_django, torch_lock, write_result  # noqa: E402

TARGET_BEFORE = 0.9  # correction rate of the base version, at least
TARGET_AFTER = 0.1  # of the retrained version, at most
TARGET_MINUTES = 15.0
BEFORE_SEED, AFTER_SEED, BASE_SEED = 101, 202, 303
BASE_EXAMPLES = 8
PEOPLE = ["reviewer", "ml_engineer", "approver", "approver2", "deployer", "admin"]
ROLES = {
    "reviewer": "reviewer",
    "ml_engineer": "ml_engineer",
    "approver": "approver",
    "approver2": "approver",
    "deployer": "deployer",
    "admin": "admin",
}
# A step of 1e-7 from a zero-initialised LoRA: the bare base model's answers.
BASE_VERSION_HYPERPARAMETERS = {"learning_rate": 1e-7, "max_steps": 1, "num_epochs": 1}
WAIT_SECONDS = 4 * 3600.0  # an overall limit only; progress is waited on, never a speed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Api:
    def __init__(self, base: str, tokens: dict[str, str]):
        self.base, self.tokens = base, tokens

    def __call__(self, who: str, method: str, path: str, body=None, *, ok=(200, 201, 202, 204)):
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={
                "Authorization": f"Token {self.tokens[who]}",
                "Content-Type": "application/json",
            },
        )
        try:
            # Answers on a busy CPU take minutes: the web side waits SERVING_TIMEOUT itself.
            with urllib.request.urlopen(request, timeout=1800) as response:
                raw, code = response.read(), response.status
        except urllib.error.HTTPError as exc:
            raw, code = exc.read(), exc.code
        if code not in ok:
            raise SystemExit(f"{method} {path} as {who}: {code} {raw[:800]!r}")
        return json.loads(raw) if raw else None


def wait_for(what: str, probe, *, children: list[subprocess.Popen], every: float = 2.0):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        for child in children:
            if child.poll() is not None:
                raise SystemExit(f"run_demo exited ({child.returncode}) while waiting for {what}")
        time.sleep(every)
    raise SystemExit(f"gave up waiting for {what} after {WAIT_SECONDS:.0f} s")


def house_style_decision(answer: str, right: str) -> dict:
    """The demo generator's rule, as the seeded reviewers apply it (seed_demo._review): an
    answer that is the house-style answer is approved, anything else is corrected to it."""
    from training_app.training.evaluate import normalise

    if normalise(answer) == normalise(right):
        return {"decision": "approve"}
    return {
        "decision": "correct",
        "corrected_output": right,
        "comment": "House style: direct answer first, then 'Next step:'.",
    }


# -- setup (untimed) ----------------------------------------------------------------------------


def make_world() -> tuple[dict[str, str], int]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from demo.data import demo_regression_set
    from governance.services import channel_save
    from reviews.services import queue_save, routing_rule_save

    call_command("prepare_base_model", verbosity=0)
    User = get_user_model()
    tokens = {}
    for name in PEOPLE:
        user = User.objects.create_user(name, password=f"{name}-demo-pass")
        user.groups.add(Group.objects.get(name=ROLES[name]))
        if name == "admin":
            user.is_staff = user.is_superuser = True
            user.save()
        tokens[name] = Token.objects.create(user=user).key
    admin = User.objects.get(username="admin")
    queue = queue_save(user=admin, name="loop", required_reviews=1, gold_rate=0.0)
    routing_rule_save(user=admin, name="review everything", position=10, queue=queue)
    channel_save(
        user=admin,
        name="production",
        description="Customer-facing answers.",
        policy={"approvals_required": 2},
        regression_set=demo_regression_set(),
    )
    return tokens, queue.pk


def start_demo(env: dict, addrport: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run_demo", addrport],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stopped as a whole, and only it
    )


def stop_demo(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


# -- the loop's stages -------------------------------------------------------------------------


class Loop:
    def __init__(self, api: Api, queue_id: int, children, max_new_tokens: int, clients: int):
        self.api, self.queue_id, self.children = api, queue_id, children
        self.max_new_tokens = max_new_tokens
        self.clients = clients
        self.stages: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        started = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] {name} (load {load_average()})", flush=True)
        yield
        self.stages[name] = round(time.monotonic() - started, 1)
        print(f"    {name}: {self.stages[name]:.0f} s", flush=True)

    def review_all(self, right_by_output: dict[int, str]) -> dict[str, int]:
        counts = {"approve": 0, "correct": 0}
        while True:
            claim = self.api("reviewer", "POST", f"/api/queues/{self.queue_id}/claim/")
            if claim is None:  # 204: nothing left
                return counts
            item = claim["item"]
            right = right_by_output.get(item["id"])
            if right is None:
                raise SystemExit(f"claimed output {item['id']}, which this bench did not ask for")
            decision = house_style_decision(item["output_text"], right)
            self.api(
                "reviewer", "POST", "/api/reviews/", {"lease": claim["lease"]["id"], **decision}
            )
            counts[decision["decision"]] += 1

    def ask(self, items) -> tuple[dict[int, str], list[dict]]:
        """Each question through the channel's generate API, `clients` at a time (as that many
        people asking at once); output id -> right answer."""
        from concurrent.futures import ThreadPoolExecutor

        def one(item) -> tuple[int, dict]:
            payload, right = item
            body = self.api(
                "ml_engineer",
                "POST",
                "/api/channels/production/generate/",
                {"prompt": payload["input"], "max_new_tokens": self.max_new_tokens},
            )
            return body["output"]["id"], {
                "question": payload["input"][-1]["content"], "answer": body["answer"],
                "right": right, "version": body["model_version"]["name"],
                "seconds": body["seconds"],
            }  # fmt: skip

        with ThreadPoolExecutor(max_workers=self.clients) as pool:
            asked = list(pool.map(one, items))
        right_by_output = {output_id: answer["right"] for output_id, answer in asked}
        return right_by_output, [answer for _, answer in asked]

    def train(self, dataset_id: int, hyperparameters: dict, name: str) -> dict:
        run = self.api(
            "ml_engineer",
            "POST",
            "/api/training-runs/",
            {"dataset_version": dataset_id, "hyperparameters": hyperparameters, "name": name},
        )

        def evaluated():
            state = self.api("ml_engineer", "GET", f"/api/training-runs/{run['id']}/")
            if state["status"] in ("failed", "cancelled"):
                raise SystemExit(f"training run {run['id']} {state['status']}: {state}")
            ref = state.get("model_version")
            return ref if ref and ref["status"] == "evaluated" else None

        ref = wait_for(f"{name} to be trained and evaluated", evaluated, children=self.children)
        version = self.api("ml_engineer", "GET", f"/api/model-versions/{ref['id']}/")
        run_state = self.api("ml_engineer", "GET", f"/api/training-runs/{run['id']}/")
        return {"version": version, "run": run_state}

    def sign_off(self, version_id: str) -> dict:
        def evaluations_done():
            state = self.api("approver", "GET", f"/api/signoff-requests/{request['id']}/")
            statuses = [e["status"] for e in state["evaluations"]]
            if "failed" in statuses:
                raise SystemExit(f"a sign-off evaluation failed: {state['evaluations']}")
            return state if statuses and all(s == "done" for s in statuses) else None

        # Taken before the request: its evaluations start on the worker as soon as it is made.
        with torch_lock():
            request = self.api(
                "ml_engineer",
                "POST",
                f"/api/model-versions/{version_id}/signoff-requests/",
                {"channel": "production", "comment": "bench_loop"},
            )
            state = wait_for("the sign-off evaluations", evaluations_done, children=self.children)
        for approver in ("approver", "approver2"):
            state = self.api(
                approver,
                "POST",
                f"/api/signoff-requests/{request['id']}/decisions/",
                {"decision": "approve", "comment": "Gate read; approved by bench_loop."},
            )
        if state["status"] != "approved":
            raise SystemExit(f"sign-off request not approved: {state['status']}")
        return {"gate": state["gate"], "evaluations": [e["metrics"] for e in state["evaluations"]]}

    def deploy(self, version_id: str) -> None:
        self.api(
            "deployer",
            "POST",
            "/api/channels/production/deploy/",
            {"version": version_id, "comment": "bench_loop"},
        )


def correction_rate(counts: dict[str, int]) -> dict:
    from monitoring.selectors import rate

    n = counts["approve"] + counts["correct"]
    return {"n": n, **rate(counts["correct"], n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n",
        type=int,
        default=120,
        help="questions before, and again after (one turn needs ~120: docs/benchmarks.md §7)",
    )
    parser.add_argument("--quick", action="store_true", help="N = 12: a smoke run, not a figure")
    parser.add_argument(
        "--max-new-tokens", type=int, default=80, help="house-style answers take <= 73"
    )
    parser.add_argument("--port", type=int, default=0, help="the web server's (default: free)")
    parser.add_argument(
        "--clients",
        type=int,
        default=None,
        help="questions asked at once (default: the model server's worker processes, as "
        "`make demo` starts it: SIGNOFF_SERVING_WORKERS, 'auto' = one per core, at most 2)",
    )
    parser.add_argument(
        "--seeds",
        default=f"{BEFORE_SEED}:{AFTER_SEED}",
        help="the draws of demo questions, before:after (bench_loop_offline.py compares draws)",
    )
    options = parser.parse_args()
    n = 12 if options.quick else options.n
    before_seed, sep, after_seed = options.seeds.partition(":")
    if not sep or not before_seed.isdigit() or not after_seed.isdigit():
        raise SystemExit(f"--seeds: {options.seeds!r} is not BEFORE:AFTER (two seeds)")
    before_seed, after_seed = int(before_seed), int(after_seed)

    var = Path(os.environ.get("SIGNOFF_VAR_DIR", ROOT / "var"))
    var.mkdir(parents=True, exist_ok=True)
    database = var / "bench-loop.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database_url = f"sqlite:///{database}"
    web_port, serving_port = options.port or free_port(), free_port()
    os.environ["SIGNOFF_SERVING_URL"] = f"http://127.0.0.1:{serving_port}"
    os.environ["SIGNOFF_SERVING_TOKEN"] = (
        os.environ.get("SIGNOFF_SERVING_TOKEN") or os.urandom(16).hex()
    )
    setup_django(database_url)  # migrate + roles, in this process
    tokens, queue_id = make_world()
    from django.db import connections

    connections.close_all()

    env = {**os.environ, "DATABASE_URL": database_url, "SIGNOFF_VAR_DIR": str(var)}
    env.pop("REDIS_URL", None)  # run_demo's embedded Redis, as `make demo`
    log = var / "bench-loop-run_demo.log"
    addrport = f"127.0.0.1:{web_port}"
    print(f"run_demo on {addrport}, model server on :{serving_port}; log {log}", flush=True)
    started = time.monotonic()
    load_start = load_average()
    demo = start_demo(env, addrport, log)
    api = Api(f"http://{addrport}", tokens)
    from serving.server import default_workers

    serving_workers = default_workers()
    clients = options.clients or serving_workers
    if clients < 1:
        raise SystemExit("--clients: at least 1")
    loop = Loop(api, queue_id, [demo], options.max_new_tokens, clients)
    report: dict = {
        "n": n,
        "seeds": {"before": before_seed, "after": after_seed},
        "max_new_tokens": options.max_new_tokens,
        "serving_workers": serving_workers,
        "clients": clients,
        "load_start": load_start,
    }
    try:
        from demo.data import demo_items

        with loop.stage("start processes"):

            def web_up():
                try:
                    return api("reviewer", "GET", "/api/queues/")
                except (urllib.error.URLError, ConnectionError, OSError):
                    return None

            wait_for("the web server", web_up, children=[demo], every=0.5)

        with loop.stage("base version (trained 1 step at lr 1e-7, signed off, deployed)"):
            seeds = list(demo_items(BASE_EXAMPLES, seed=BASE_SEED))
            api(
                "admin",
                "POST",
                "/api/outputs/",
                [{**p, "source": "loop-seed", "model_version": "seed"} for p, _ in seeds],
            )
            outputs = api("admin", "GET", "/api/outputs/?source=loop-seed")
            rows = outputs["results"] if isinstance(outputs, dict) else outputs
            by_external = {p["external_id"]: right for p, right in seeds}
            loop.review_all({row["id"]: by_external[row["external_id"]] for row in rows})
            dataset = api(
                "ml_engineer",
                "POST",
                "/api/datasets/",
                {"name": "loop-base", "sources": ["loop-seed"], "run": "inline",
                 "eval_fraction": 0.25},
            )  # fmt: skip
            with torch_lock():
                base = loop.train(dataset["id"], BASE_VERSION_HYPERPARAMETERS, "loop-base")
            base_version = base["version"]
            loop.sign_off(base_version["id"])
            loop.deploy(base_version["id"])

        before_items = list(demo_items(n, seed=before_seed))
        with loop.stage("before: answer N questions (base version)"), torch_lock():
            right_before, answers_before = loop.ask(before_items)
        with loop.stage("before: review through the API"):
            before = loop.review_all(right_before)
        report["before"] = {"counts": before, "correction": correction_rate(before)}
        print(f"    before: {before}", flush=True)

        with loop.stage("dataset version from the reviews"):
            dataset = api(
                "ml_engineer",
                "POST",
                "/api/datasets/",
                {"name": "loop-corrections", "sources": ["channel:production"],
                 "model_version": base_version["name"], "run": "inline"},
            )  # fmt: skip
        train_examples = (dataset.get("counts") or {}).get("train")
        report["dataset"] = {
            "id": dataset["id"],
            "train": train_examples,
            "eval": (dataset.get("counts") or {}).get("eval"),
            "pii_masked": (dataset.get("counts") or {}).get("pii"),
            "pii_allow": (dataset.get("settings") or {}).get("pii_allow", []),
        }
        print(f"    dataset: {report['dataset']}", flush=True)
        # No hyperparameters: run creation fits the schedule to the data, as for anyone who
        # leaves the launch form at its defaults.
        with loop.stage("train (fitted recipe) + evaluation"), torch_lock():
            trained = loop.train(dataset["id"], {}, "loop-retrained")
        report["recipe"] = trained["run"].get("recipe")
        recipe = report["recipe"] or {}
        print(
            f"    recipe: {recipe.get('total_steps')} steps, fitted {recipe.get('fitted')}",
            flush=True,
        )
        new_version = trained["version"]
        report["training"] = {
            "steps": trained["run"].get("progress", {}).get("step"),
            "elapsed_s": trained["run"].get("progress", {}).get("elapsed_s"),
            "metrics": new_version.get("metrics"),
        }
        with loop.stage("sign-off (gate evaluations + two approvers)"):
            report["signoff"] = loop.sign_off(new_version["id"])
        with loop.stage("deploy"):
            loop.deploy(new_version["id"])

        after_items = list(demo_items(n, seed=after_seed))
        with loop.stage("after: answer N new questions (retrained version)"), torch_lock():
            right_after, answers_after = loop.ask(after_items)
        with loop.stage("after: review through the API"):
            after = loop.review_all(right_after)
        report["after"] = {"counts": after, "correction": correction_rate(after)}
        print(f"    after: {after}", flush=True)

        monitoring = {}
        for label, version in (("before", base_version), ("after", new_version)):
            figures = api("approver", "GET", f"/api/monitoring/versions/{version['id']}/")
            monitoring[label] = {
                "version": version["name"],
                "reviewed": figures["reviewed"],
                "correction": figures["rates"]["correction"],
            }
        report["monitoring"] = monitoring
        for label in ("before", "after"):
            ours, theirs = report[label]["correction"], monitoring[label]["correction"]
            same = ours["count"] == theirs["count"] and ours["n"] == monitoring[label]["reviewed"]
            report[label]["monitoring_agrees"] = same
        report["samples"] = {"before": answers_before[:3], "after": answers_after[:3]}
    finally:
        stop_demo(demo)
    total = time.monotonic() - started
    report["stages_s"] = loop.stages
    report["total_s"] = round(total, 1)
    report["load_end"] = load_average()
    b, a = report["before"]["correction"], report["after"]["correction"]
    print("\nstage                                                  seconds")
    for name, seconds in loop.stages.items():
        print(f"  {name:52} {seconds:8.0f}")
    print(f"  {'total (processes started to stopped)':52} {total:8.0f}")
    print(
        f"correction rate before {b['rate']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}] "
        f"(n={b['n']}), after {a['rate']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] "
        f"(n={a['n']}); monitoring agrees: {report['before']['monitoring_agrees']} / "
        f"{report['after']['monitoring_agrees']}; load {load_start} -> {report['load_end']}"
    )
    report["headline"] = [
        headline("correction rate before (base version)", b["rate"], target=TARGET_BEFORE,
                 lower_is_better=False),
        headline("correction rate after one turn", a["rate"], target=TARGET_AFTER),
        headline("loop wall time", round(total / 60, 1), "min", target=TARGET_MINUTES),
    ]  # fmt: skip
    report["curve"] = {
        "title": f"One turn of the loop, N={n}: wall time per stage "
        f"(correction rate {b['rate']:.2f} -> {a['rate']:.2f})",
        "kind": "bar",
        "y": "seconds",
        "series": dict(loop.stages),
    }
    write_result("loop", report)


if __name__ == "__main__":
    main()
