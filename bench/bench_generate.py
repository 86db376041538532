"""The generate path of a channel's live version: requests/s and latency of the model server,
with the version's LoRA adapter applied on the fly (unmerged, the default) and merged into the
base weights (`merge_and_unload`).

    .venv/bin/python bench/bench_generate.py --quick            # 12 requests per mode, SQLite
    .venv/bin/python bench/bench_generate.py                    # 40 requests per mode, twice
    .venv/bin/python bench/bench_generate.py --db postgres --name bench_generate_x

Measured against the model server's HTTP API (`POST /generate`), which is what the web
endpoint `/api/channels/<name>/generate/` forwards to; the web side adds a database write and
routing per answer, not measured here. The server runs in its own process, started the way
`manage.py serve_models` starts it, on SmolLM2-135M-Instruct (prepared by
`manage.py prepare_base_model`) with a fresh LoRA adapter of the default shape (r=16 on every
linear layer, peft's default init: B = 0, so both modes give the same answers and the same
number of tokens; the adapter's compute is the same as a trained one's). The version is
registered and marked approved directly in a scratch database: the governance flow is not
what is measured. Each request asks a different demo question with a fixed `max_new_tokens`;
`--concurrency` clients send at once (one process answers one at a time: generation holds a
lock; `workers2` is two processes, `serve_models --workers 2`).
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (
    ROOT,
    parser,
    percentile,
    scratch_database,
    setup_django,
    wait_ready,
    write_result,
)

SERVER = """
import django, sys
django.setup()
from serving.server import make_server, serve_workers
port, mode = int(sys.argv[1]), sys.argv[2]
if mode.startswith("workers"):
    print("ready", flush=True)
    serve_workers("127.0.0.1", port, workers=int(mode.removeprefix("workers")))
else:
    server = make_server("127.0.0.1", port, merge_adapters=mode == "merged")
    print("ready", flush=True)
    server.serve_forever()
"""
MODES = ("unmerged", "merged", "workers2")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live_version(model_dir: Path, work: Path):
    """A registered base model and an approved version carrying a fresh default-shape adapter."""
    import torch
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.roles import Role
    from datasets_app.models import DatasetVersion
    from training_app.models import ModelVersion
    from training_app.services import base_model_register, training_run_create
    from training_app.services.versions import model_version_store_adapter
    from training_app.training.hyperparameters import DEFAULTS

    user = get_user_model().objects.create_user(username="bench-engineer", password="x")
    user.groups.add(Group.objects.get(name=Role.ML_ENGINEER))
    from django.conf import settings

    base_model_register(
        user=None, name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"], folder=model_dir
    )
    dataset = DatasetVersion.objects.create(
        name="bench-generate", status="ready", created_by=user, manifest_hash="0" * 64
    )
    run = training_run_create(user=user, dataset_version=dataset, enqueue=False)
    version = ModelVersion.objects.select_related("base_model").get(run=run)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    adapter = get_peft_model(
        base,
        LoraConfig(
            r=DEFAULTS["lora_r"],
            lora_alpha=DEFAULTS["lora_alpha"],
            target_modules=DEFAULTS["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )
    adapter.save_pretrained(str(work / "adapter"), safe_serialization=True)
    artifact_dir, manifest = model_version_store_adapter(
        version=version, adapter_dir=work / "adapter"
    )
    ModelVersion.objects.filter(pk=version.pk).update(
        status="approved", artifact_dir=artifact_dir, manifest=manifest
    )
    return version


def post(url: str, body: dict, timeout: float = 600) -> dict:
    """As the web process asks the model server: with its secret (same settings, same key)."""
    from serving.client import call

    return call(url, "/generate", body, timeout=timeout)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory, plus its children's (a worker pool's workers)."""
    total = 0.0
    for process in [pid, *children_of(pid)]:
        try:
            lines = Path(f"/proc/{process}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:"))
    return total


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def measure(mode: str, version_id: str, prompts: list, options) -> dict:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if server.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {mode} model server did not start")
        url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        wait_ready(url, server, seconds=300)  # a worker pool binds after saying ready
        # One warm-up answer per client at once: each worker of a pool loads the model on its
        # first answer, and a busy worker leaves the next connection to a free one.
        warm: list[dict] = []
        warmers = [
            threading.Thread(
                target=lambda: warm.append(
                    post(url, {"version_id": version_id, "messages": prompts[0],
                               "max_new_tokens": 1}, timeout=900)
                )
            )
            for _ in range(options.concurrency)
        ]  # fmt: skip
        for thread in warmers:
            thread.start()
        for thread in warmers:
            thread.join()
        if len(warm) != options.concurrency:
            raise SystemExit(f"the {mode} model server did not answer the warm-up")
        first = warm[0]
        load_seconds = time.perf_counter() - started
        latencies: list[float] = []
        tokens: list[int] = []
        texts: list[str] = []
        lock = threading.Lock()
        queue = list(range(options.requests))

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop(0)
                body = {
                    "version_id": version_id,
                    "messages": prompts[index % len(prompts)],
                    "max_new_tokens": options.max_new_tokens,
                }
                sent = time.perf_counter()
                answer = post(url, body)
                with lock:
                    latencies.append(time.perf_counter() - sent)
                    tokens.append(answer["tokens"])
                    texts.append(answer["text"])

        load_before = load_average()
        began = time.perf_counter()
        clients = [threading.Thread(target=client) for _ in range(options.concurrency)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        wall = time.perf_counter() - began
        figures = {
            "mode": mode,
            "requests": len(latencies),
            "requests_per_second": len(latencies) / wall,
            "p50_ms": statistics.median(latencies) * 1000,
            "p95_ms": percentile(latencies, 95) * 1000,
            "max_ms": max(latencies) * 1000,
            "generated_tokens": sum(tokens),
            "tokens_per_second": sum(tokens) / wall,
            "load_seconds": load_seconds,
            "server_peak_rss_mib": peak_rss_mib(server.pid),
            "load_before": load_before,
            "load_after": load_average(),
            "first_answer": first["text"],
            "answers": texts,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        f"{mode:9} {figures['requests']} requests: {figures['requests_per_second']:.2f} req/s, "
        f"p50 {figures['p50_ms']:,.0f} ms, p95 {figures['p95_ms']:,.0f} ms, "
        f"{figures['tokens_per_second']:.1f} generated tokens/s, server peak RSS "
        f"{figures['server_peak_rss_mib']:,.0f} MiB, load {figures['load_before']} -> "
        f"{figures['load_after']}",
        flush=True,
    )
    return figures


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.set_defaults(db="sqlite")
    p.add_argument("--name", default="bench_generate", help="scratch database name")
    p.add_argument("--requests", type=int, help="timed requests per mode (12 quick, else 40)")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help="unmerged (one process, the baseline), merged (adapters folded into the "
        "weights), workers2 (`serve_models --workers 2`, unmerged)",
    )
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, help="runs per mode, alternating (1 quick, else 2)")
    p.add_argument(
        "--model",
        default=str(
            Path(os.environ.get("SIGNOFF_VAR_DIR", ROOT / "var"))
            / "models"
            / "smollm2-135m-instruct"
        ),
    )
    options = p.parse_args()
    options.requests = options.requests or (12 if options.quick else 40)
    repeats = options.repeats or (1 if options.quick else 2)
    model_dir = Path(options.model)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"{model_dir} is missing: run `manage.py prepare_base_model`")
    url = scratch_database(options.db, options.name)
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    os.environ["SIGNOFF_VAR_DIR"] = str(work / "var")  # the version's artifact goes here
    setup_django(url)
    version = live_version(model_dir, work)

    from demo.data import demo_outputs

    prompts = [output["input"] for output in demo_outputs(max(options.requests, 8), seed=11)]
    modes = [mode.strip() for mode in options.modes.split(",") if mode.strip()]
    if "unmerged" not in modes or not set(modes) <= set(MODES):
        raise SystemExit(f"--modes: some of {', '.join(MODES)}, unmerged (the baseline) included")
    order = []
    for index in range(repeats):  # ABC CBA... alternate so drifting load hits every mode
        order.extend(modes if index % 2 == 0 else modes[::-1])
    print(
        f"{options.requests} requests per run, concurrency {options.concurrency}, "
        f"max_new_tokens {options.max_new_tokens}, order {' '.join(order)}; "
        f"load {load_average()}",
        flush=True,
    )
    runs: dict[str, list] = {mode: [] for mode in modes}
    for mode in order:
        runs[mode].append(measure(mode, str(version.pk), prompts, options))

    def side(mode: str) -> dict:
        done = runs[mode]
        latencies_p95 = [r["p95_ms"] for r in done]
        return {
            "requests_per_second": statistics.mean(r["requests_per_second"] for r in done),
            "p50_ms": statistics.mean(r["p50_ms"] for r in done),
            "p95_ms": statistics.mean(latencies_p95),
            "tokens_per_second": statistics.mean(r["tokens_per_second"] for r in done),
            "server_peak_rss_mib": max(r["server_peak_rss_mib"] for r in done),
        }

    sides = {mode: side(mode) for mode in modes}
    unmerged = sides["unmerged"]
    ratios = {}
    for mode in (m for m in modes if m != "unmerged"):
        ratios[f"{mode}_over_unmerged"] = (
            sides[mode]["requests_per_second"] / unmerged["requests_per_second"]
        )
    # Workers answer with 1 torch thread each, unmerged with 2: the same greedy answers up
    # to float summation order, so "same" is reported, not assumed.
    same = {
        mode: all(
            sorted(a["answers"]) == sorted(b["answers"])
            for a, b in zip(runs["unmerged"], runs[mode], strict=True)
        )
        for mode in modes
        if mode != "unmerged"
    }
    print()
    for mode in modes:
        figures = sides[mode]
        ratio = ratios.get(f"{mode}_over_unmerged")
        print(
            f"{mode:9} {figures['requests_per_second']:.2f} req/s (p50 {figures['p50_ms']:,.0f} "
            f"ms, p95 {figures['p95_ms']:,.0f} ms, peak RSS "
            f"{figures['server_peak_rss_mib']:,.0f} MiB)"
            + (f": {ratio:.2f}x unmerged; same answers: {'yes' if same[mode] else 'NO'}"
               if ratio else "")
        )  # fmt: skip
    for done in runs.values():
        for figures in done:
            figures.pop("answers")
    write_result(
        "generate",
        {
            "db": options.db,
            "quick": options.quick,
            "requests": options.requests,
            "concurrency": options.concurrency,
            "max_new_tokens": options.max_new_tokens,
            "order": order,
            **sides,
            **ratios,
            "same_answers": same,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
