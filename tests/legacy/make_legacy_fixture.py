"""Record a small populated Signoff database as the code before issue 16 writes it, for the
upgrade test (tests/test_legacy_upgrade.py; docs/design/issue-16-layout-plan.md, section 3.5):

    .venv/bin/python -m tests.legacy.make_legacy_fixture

It builds the database in a scratch folder (SQLite, the test settings; nothing under var/ is
touched) through the real services: users in every role with their groups and API tokens,
queues with guidelines, routing rules, ingested outputs reviewed (approvals, corrections, a
rejection, an undone decision, a consensus, a disagreement a lead settles, an auto-accepted
output, a gold item, a live lease, an item left pending), a dataset version built from them,
two trained model versions and a cancelled run, two channels with regression sets, sign-off
requests with evaluations, approvals and a rejection, deployments and a rollback, channel
monitoring with a drift alert acknowledged, a webhook with deliveries made, and the audit log of
all of it.

Training is the one step played rather than run (no torch): the versions get stand-in adapter
files, as tests/training_app/governance_helpers.py gives them, and their runs and evaluations
the rows a worker leaves; every step around them goes through the services.

It then writes legacy_tables.json beside it: the migrations applied per app, and every row of
every table of the project's apps and of the auth, content-type and token tables, keyed by table
and column names with each column's field type (how the test writes them back with raw SQL).
Made once on the code before the restructuring: that old database is what the upgrade test
starts from, so it is not remade on later code.
"""

import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any
from uuid import UUID

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "legacy_tables.json"
ROOT = HERE.parent.parent
PROJECT_APPS = ("reviews", "datasets_app", "training_app")
# Outside the project's apps: the users, groups and tokens its rows refer to, and the content
# types and permissions that moving a model to another app relabels.
SUPPORT_APPS = ("contenttypes", "auth", "authtoken")
PEOPLE = {
    "admin": "admin",
    "reviewer": "reviewer",
    "reviewer2": "reviewer",
    "lead": "lead",
    "ml_engineer": "ml_engineer",
    "approver": "approver",
    "approver2": "approver",
    "deployer": "deployer",
    "auditor": "auditor",
}
GUIDELINES = (
    "# Harbor Mutual support answers\n\nApprove correct answers in house style; correct the "
    "facts or the style; reject what cannot be salvaged; escalate when unsure."
)
REGRESSION_SET = [
    {"prompt": "How long do claims take?", "reference": "5-10 business days."},
    {"prompt": "How far do you tow?", "reference": "Up to 15 miles."},
]
LIVE_METRICS = {"eval_loss": 1.0, "perplexity": 2.7, "rouge_l": 0.5, "token_f1": 0.5}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="signoff-legacy-") as scratch:
        os.environ.pop("DATABASE_URL", None)
        os.environ["SIGNOFF_VAR_DIR"] = scratch
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        with webhook_receiver() as url:
            counts = tell_the_story(Path(scratch), webhook_url=url)
        fixture = dump()
    FIXTURE.write_text(fixture_text(fixture))
    tables = fixture["tables"]
    print(f"wrote {FIXTURE.relative_to(ROOT)}: {sum(len(t['rows']) for t in tables.values())} rows")
    for table, content in tables.items():
        print(f"  {table:40} {len(content['rows']):4}")
    print(f"story: {counts}")


@contextmanager
def webhook_receiver() -> Iterator[str]:
    """A local endpoint for the webhook: it refuses the first delivery (500), so one delivery
    is left waiting for its retry, and takes the others (204)."""
    answered = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(500 if not answered else 204)
            answered.append(self.path)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/signoff-hooks"
    finally:
        server.shutdown()
        server.server_close()


def tell_the_story(scratch: Path, *, webhook_url: str) -> dict[str, Any]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from core.audit import audit_verify
    from datasets_app.services import dataset_version_build
    from governance.models import SignoffRequest
    from governance.services import (
        channel_deploy,
        channel_rollback,
        channel_save,
        signoff_decide,
        signoff_request_create,
    )
    from monitoring.services.drift import (
        channel_monitoring_save,
        drift_alert_acknowledge,
        drift_check,
    )
    from monitoring.services.webhooks import (
        webhook_deliver,
        webhook_deliveries_due,
        webhook_save,
    )
    from reviews.models import Output, RoutingRule
    from reviews.services import (
        escalation_queue,
        guidelines_publish,
        output_mark_gold,
        outputs_ingest,
        queue_save,
        review_undo,
        routing_rule_save,
    )
    from training_app.services import base_model_register, training_run_cancel, training_run_create

    call_command("bootstrap_roles", verbosity=0)
    User = get_user_model()
    people = {}
    for username, role in PEOPLE.items():
        person = User.objects.create_user(
            username=username, email=f"{username}@harbor.example", password=None
        )
        person.first_name = username.replace("_", " ").title()
        if username == "admin":
            person.is_staff = person.is_superuser = True
        person.save()
        person.groups.add(Group.objects.get(name=role))
        people[username] = person
    for username in ("admin", "auditor", "ml_engineer"):
        call_command("create_api_token", username, stdout=StringIO())
    admin, ml_engineer = people["admin"], people["ml_engineer"]

    # -- the review loop ------------------------------------------------------------------
    support = queue_save(
        user=admin,
        name="support",
        description="Answers the model was unsure of.",
        required_reviews=1,
        guidelines=GUIDELINES,
    )
    guidelines_publish(queue=support, user=admin, text=GUIDELINES + "\n\nAlways end with a step.")
    policy = queue_save(
        user=admin,
        name="policy",
        description="Complaints: two reviewers must agree.",
        required_reviews=2,
        guidelines=GUIDELINES,
    )
    routing_rule_save(user=admin, name="complaints", position=10, tag="complaint", queue=policy)
    routing_rule_save(
        user=admin, name="low confidence", position=20, confidence_below=0.8, queue=support
    )
    routing_rule_save(
        user=admin, name="auto-accept", position=30, action=RoutingRule.Action.AUTO_ACCEPT
    )

    def item(external_id, prompt, answer, confidence, **extra):
        return {
            "external_id": external_id,
            "source": "support-bot",
            "model_name": "harbor-assistant",
            "model_version": "2026.11",
            "input": prompt,
            "output": answer,
            "confidence": confidence,
            **extra,
        }

    outputs_ingest(
        actor=ml_engineer,
        payload=[
            item("s1", "How long do claims take?", "Claims are paid in 5-10 business days.", 0.4),
            item("s2", "How far do you tow?", "We tow up to 50 miles.", 0.5),
            item("s3", "What is the collision deductible?", "It is $500.", 0.6),
            item("s4", "Can I move my payment date?", "No.", 0.3),
            item("s5", "Do you cover rental cars?", "Yes, always.", 0.5),
            item("s6", "How do I add a driver?", "Use the app.", 0.5, metadata={"lang": "en"}),
            item(
                "s7",
                [
                    {"role": "system", "content": "You answer for Harbor Mutual."},
                    {"role": "user", "content": "Is hail damage covered?"},
                ],
                "Yes, under comprehensive cover.",
                0.2,
                priority=-5,
            ),
            item(
                "p1",
                "My claim was declined without a reason.",
                "Your claim was declined because the damage predates the policy.",
                0.9,
                tags=["complaint"],
            ),
            item("p2", "You charged me twice.", "That cannot happen.", 0.9, tags=["complaint"]),
            item("a1", "What are your opening hours?", "8am to 8pm, Monday to Saturday.", 0.97),
        ],
    )

    def decide(reviewer, queue, external_id, decision, corrected="", **extra):
        lease = claim(reviewer, queue, external_id)
        return submit(lease, reviewer, decision, corrected, **extra)

    reviewer, reviewer2, lead = people["reviewer"], people["reviewer2"], people["lead"]
    decide(reviewer, support, "s1", "approve")
    decide(reviewer, support, "s2", "correct", "We tow up to 15 miles. Next step: call us.")
    decide(reviewer, support, "s3", "approve", comment="Short but right.")
    decide(reviewer, support, "s4", "reject", reason="Unhelpful: the date can move once a term.")
    undone = decide(reviewer, support, "s5", "approve")
    lease = review_undo(review_id=undone.pk, user=reviewer)
    submit(lease, reviewer, "correct", "Rental cars are covered with the rental add-on.")
    claim(reviewer2, support, "s6")  # left held: a live lease
    decide(reviewer, policy, "p1", "approve")
    decide(reviewer, policy, "p2", "approve")
    decide(reviewer2, policy, "p1", "approve")
    decide(reviewer2, policy, "p2", "correct", "We will refund the duplicate charge in 5 days.")
    decide(lead, escalation_queue(), "p2", "correct", "We refund a duplicate charge in 5 days.")
    output_mark_gold(output=Output.objects.get(external_id="s1"), user=lead)

    # -- a dataset version and trained model versions -------------------------------------
    dataset = dataset_version_build(
        user=ml_engineer, name="harbor-support", seed=7, eval_fraction=0.3
    )
    base_folder = scratch / "base-model"
    base_folder.mkdir()
    (base_folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    )
    (base_folder / "model.safetensors").write_bytes(b"stand-in base weights")
    base_model_register(
        user=admin, name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"], folder=base_folder
    )

    def trained(name, parent=None, seed=0):
        run = training_run_create(
            user=ml_engineer,
            dataset_version=dataset,
            parent_version=parent,
            hyperparameters={"num_epochs": 1},
            name=name,
            enqueue=False,
        )
        return play_training(run, scratch=scratch, seed=seed)

    first = trained("harbor-v1", seed=1)
    second = trained("harbor-v2", parent=first, seed=2)
    cancelled = training_run_create(
        user=ml_engineer, dataset_version=dataset, name="harbor-v3", enqueue=False
    )
    training_run_cancel(user=ml_engineer, run=cancelled)

    # -- governance: channels, sign-off, deployments --------------------------------------
    webhook_save(
        user=admin,
        name="ops",
        url=webhook_url,
        events=["version.awaiting_signoff", "version.approved", "channel.deployed",
                "channel.rolled_back", "drift.alert"],
    )  # fmt: skip
    staging = channel_save(
        user=admin,
        name="staging",
        description="Internal testing before release.",
        policy={"approvals_required": 1},
        regression_set=REGRESSION_SET,
    )
    production = channel_save(
        user=admin,
        name="production",
        description="Customer-facing answers.",
        policy={"approvals_required": 2},
        regression_set=REGRESSION_SET,
    )
    approver, approver2, deployer = people["approver"], people["approver2"], people["deployer"]

    def put_forward(version, channel, comment):
        request = signoff_request_create(
            user=ml_engineer, version=version, channel=channel, comment=comment, enqueue=False
        )
        play_evaluations(request)
        return request

    request = put_forward(first, production, "First release of the support adapter.")
    signoff_decide(user=approver, request=request, decision="approve", comment="Gate passes.")
    signoff_decide(user=approver2, request=request, decision="approve", comment="Read samples.")
    channel_deploy(user=deployer, channel=production, version=first, comment="First release.")
    request = put_forward(second, production, "Retrained on the corrections.")
    signoff_decide(user=approver, request=request, decision="approve", comment="Better loss.")
    signoff_decide(user=approver2, request=request, decision="approve", comment="Agreed.")
    channel_deploy(user=deployer, channel=production, version=second)
    channel_rollback(user=deployer, channel=production, comment="Complaints about tone.")
    request = put_forward(second, staging, "Try it on staging.")
    signoff_decide(user=approver, request=request, decision="reject", comment="Tone is off.")

    # -- monitoring: live traffic audited, drift, webhooks --------------------------------
    channel_monitoring_save(
        user=admin,
        channel=production,
        audit_sample_rate=1.0,
        audit_queue=support,
        margin=0.0,
        min_samples=2,
        baseline={"correction": 0.0},
    )
    outputs_ingest(
        actor=ml_engineer,
        payload=[
            {
                "external_id": f"live-{n}",
                "source": "channel:production",
                "model_name": "harbor-assistant",
                "model_version": first.name,
                "input": prompt,
                "output": answer,
                "confidence": 0.99,
                "priority": 5,
            }
            for n, (prompt, answer) in enumerate(
                [("Do you insure boats?", "No."), ("Is glass covered?", "Never.")], start=1
            )
        ],
    )
    decide(reviewer, support, "live-1", "correct", "Boats are covered by our marine policy.")
    decide(reviewer, support, "live-2", "correct", "Glass is covered with no excess.")
    (alert,) = drift_check(version=first, channel=production)
    drift_alert_acknowledge(user=ml_engineer, alert=alert)
    for delivery_id in webhook_deliveries_due():
        webhook_deliver(delivery_id=delivery_id)

    return {
        "audit_events": audit_verify(),
        "signoff_requests": dict(SignoffRequest.objects.values_list("pk", "status").order_by("pk")),
    }


def claim(reviewer, queue, external_id: str):
    from reviews.services import queue_claim_next

    lease = queue_claim_next(queue=queue, user=reviewer)
    assert lease is not None and lease.output.external_id == external_id, (
        f"{reviewer} expected {external_id} from {queue}, got {lease and lease.output}"
    )
    return lease


def submit(lease, reviewer, decision: str, corrected: str = "", **extra):
    from reviews.services import review_submit

    return review_submit(
        lease_id=lease.pk, user=reviewer, decision=decision, corrected_output=corrected, **extra
    )


def play_training(run, *, scratch: Path, seed: int):
    """What a worker leaves after training `run`: the run succeeded with its curves, the
    version trained with a stored adapter (stand-in files), evaluated against its parent."""
    from django.db import transaction
    from django.utils import timezone

    from training_app.models import Evaluation, ModelVersion, TrainingRun
    from training_app.services import evaluation_request, model_version_transition
    from training_app.services.versions import model_version_store_adapter

    from ..training_app.governance_helpers import write_adapter

    now = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED,
        attempts=1,
        lease_owner="legacy-fixture-worker",
        heartbeat_at=now,
        started_at=now - timedelta(minutes=3),
        finished_at=now,
        progress={"step": 4, "total_steps": 4, "loss": 1.1, "lr": 0.0},
        loss_history=[[1, 2.4], [2, 1.9], [3, 1.4], [4, 1.1]],
        eval_history=[{"step": 4, "eval_loss": 1.2}],
        log_tail="step 4/4 loss 1.1\ntraining finished",
    )
    version = ModelVersion.objects.get(run=run)
    adapter = write_adapter(scratch / f"adapter-{seed}", None, seed)
    artifact_dir, manifest = model_version_store_adapter(version=version, adapter_dir=adapter)
    with transaction.atomic():
        model_version_transition(
            version=version,
            to=ModelVersion.Status.TRAINED,
            actor=None,
            payload={"manifest": manifest, "best_eval_loss": 1.2},
            artifact_dir=artifact_dir,
            manifest=manifest,
            metrics={"steps": 4, "best_eval_loss": 1.2, "train_examples": 4, "seconds": 180},
            environment={"libraries": {"torch": "stand-in"}, "device": "cpu"},
            trained_at=now,
        )
        evaluation = evaluation_request(user=None, version=version, enqueue=False)
    play_evaluation(Evaluation.objects.get(pk=evaluation.pk))
    with transaction.atomic():
        model_version_transition(
            version=version,
            to=ModelVersion.Status.EVALUATED,
            actor=None,
            payload={"evaluation": str(evaluation.pk)},
        )
    version.refresh_from_db()
    return version


def play_evaluations(request) -> None:
    from training_app.models import Evaluation

    for evaluation in Evaluation.objects.filter(signoff_request=request).order_by("created_at"):
        play_evaluation(evaluation)


def play_evaluation(evaluation) -> None:
    """What an evaluation worker leaves: done, the candidate a little better than the live
    version on every metric, with one side-by-side sample."""
    from django.utils import timezone

    from training_app.models import Evaluation

    better = {"eval_loss": 0.9, "perplexity": 2.5, "rouge_l": 0.55, "token_f1": 0.56}
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=Evaluation.Status.DONE,
        attempts=1,
        lease_owner="legacy-fixture-worker",
        finished_at=timezone.now(),
        metrics={"candidate": better, "reference": LIVE_METRICS, "examples": 2, "generated": 2},
        samples=[
            {
                "prompt": "How far do you tow?",
                "expected": "Up to 15 miles.",
                "candidate": "Up to 15 miles.",
                "reference": "Ten miles.",
                "candidate_rouge_l": 1.0,
                "reference_rouge_l": 0.0,
            }
        ],
    )


# -- the dump ---------------------------------------------------------------------------------


def dump() -> dict[str, Any]:
    from django.apps import apps
    from django.db import connection
    from django.db.migrations.recorder import MigrationRecorder

    applied: dict[str, list[str]] = {}
    recorder = MigrationRecorder(connection)
    for app, name in recorder.migration_qs.order_by("id").values_list("app", "name"):
        applied.setdefault(app, []).append(name)

    models = [
        model
        for label in (*SUPPORT_APPS, *PROJECT_APPS)
        for model in apps.get_app_config(label).get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy
    ]
    tables = {model._meta.db_table: table_rows(model) for model in models}
    prefixes = tuple(f"{label}_" for label in PROJECT_APPS)
    unrecorded = sorted(
        table
        for table in connection.introspection.table_names()
        if table.startswith(prefixes) and table not in tables
    )
    assert not unrecorded, f"tables without a model, not recorded: {unrecorded}"
    return {
        "made_by": "python -m tests.legacy.make_legacy_fixture",
        "made_on_commit": git_commit(),
        "made_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "migrations": applied,
        "tables": tables,
    }


def table_rows(model) -> dict[str, Any]:
    """The table's primary-key column, its columns ([name, field type]; a foreign key has its
    target's type) and its rows in primary-key order, each value as JSON holds it."""
    fields = model._meta.local_concrete_fields
    columns = []
    for field in fields:
        typed = field.target_field if field.is_relation else field
        columns.append([field.column, typed.get_internal_type()])
    pk = model._meta.pk
    rows = [
        [as_json(value) for value in row]
        for row in model._base_manager.order_by(pk.attname).values_list(
            *[f.attname for f in fields]
        )
    ]
    for row in rows:
        for field, value in zip(fields, row, strict=True):
            # Written back as SQL NULL: a JSON null in a NOT NULL column would not go back.
            assert value is not None or field.null, f"{model._meta.db_table}.{field.column}"
    return {"primary_key": pk.column, "columns": columns, "rows": rows}


def as_json(value: Any) -> Any:
    # Full precision: the audit chain hashes timestamps to the microsecond.
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        raise TypeError("binary columns are not recorded; none existed when this was written")
    return value


def git_commit() -> str:
    try:
        # "-dirty" when the working tree had uncommitted changes.
        answer = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return answer.stdout.strip()


def fixture_text(fixture: dict[str, Any]) -> str:
    """JSON with one line per row, so a reader (and a diff) sees rows, not values."""

    def line(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    head = {key: value for key, value in fixture.items() if key != "tables"}
    parts = [json.dumps(head, indent=1, ensure_ascii=False)[:-2] + ',\n "tables": {']
    tables = []
    for table, content in fixture["tables"].items():
        rows = ",\n".join(f"    {line(row)}" for row in content["rows"])
        tables.append(
            f'  "{table}": {{\n'
            f'   "primary_key": {line(content["primary_key"])},\n'
            f'   "columns": {line(content["columns"])},\n'
            + (f'   "rows": [\n{rows}\n   ]\n  }}' if rows else '   "rows": []\n  }')
        )
    parts.append(",\n".join(tables))
    parts.append(" }\n}\n")
    text = "\n".join(parts)
    assert json.loads(text) == json.loads(json.dumps(fixture)), "the writer lost something"
    return text


if __name__ == "__main__":
    main()
