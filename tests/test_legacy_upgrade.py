"""A database made before issue 16's restructuring upgrades to today's migrations and reads
back the same through the API (docs/design/issue-16-layout-plan.md, section 3.5).

tests/legacy/legacy_tables.json holds that database (how it was made: its generator beside
it): the migrations it had applied and every row of the project's tables and of the auth,
content-type and token tables. The test puts an empty test database in exactly that migration
state, writes the rows back with raw SQL (the old schema, not today's models), runs `migrate`
as an operator upgrading would, then checks that nothing was lost: row counts and permission
grants, the audit chain, and every object read through the API with the old admin's token.
Before the restructuring the recorded state is today's, so the upgrade applies nothing; after
it, this is what proves the upgrade path.
"""

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import DatabaseError, connection, models, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from rest_framework.test import APIClient

from core.audit import audit_verify, audit_verify_against_head

FIXTURE = json.loads((Path(__file__).parent / "legacy" / "legacy_tables.json").read_text())
# Rows that migrate's post_migrate signal writes into every fresh database, the test database
# included: the old database's own replace them. After the upgrade there may be more (a model
# that is new, or new in its app, gets its content type and permissions).
WRITTEN_BY_MIGRATE = {"django_content_type", "auth_permission"}
AUTO_KEYS = {"AutoField", "BigAutoField", "SmallAutoField"}


class Recorded:
    """The fixture's rows as dicts by column name."""

    def __init__(self, fixture: dict[str, Any]):
        self.tables = fixture["tables"]

    def rows(self, table: str) -> list[dict[str, Any]]:
        columns = [name for name, _ in self.tables[table]["columns"]]
        return [dict(zip(columns, row, strict=True)) for row in self.tables[table]["rows"]]

    def by_id(self, table: str, key: str = "id") -> dict[Any, dict[str, Any]]:
        return {row[key]: row for row in self.rows(table)}


RECORDED = Recorded(FIXTURE)


@pytest.fixture
def upgraded_database():
    """The old database, upgraded. Whatever happens, the test database is left at today's
    migrations for the tests after this one (flushed by pytest-django as usual)."""
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(recorded_targets(executor))
        assert applied_migrations() == recorded_migrations(), "not the recorded state"
        insert_recorded_rows()
        call_command("migrate", interactive=False, verbosity=0)
        yield
    finally:
        ContentType.objects.clear_cache()
        call_command("migrate", interactive=False, verbosity=0)
        ContentType.objects.clear_cache()


def recorded_migrations() -> set[tuple[str, str]]:
    return {(app, name) for app, names in FIXTURE["migrations"].items() for name in names}


def applied_migrations() -> set[tuple[str, str]]:
    return set(MigrationRecorder(connection).applied_migrations())


def recorded_targets(executor: MigrationExecutor) -> list[tuple[str, str | None]]:
    """Per app, the last recorded migration (the one whose plan holds all the others); apps
    that did not exist then are unmigrated entirely."""
    graph = executor.loader.graph
    missing = sorted(recorded_migrations() - set(graph.nodes))
    assert not missing, f"recorded migrations no longer in the code (squashed?): {missing}"
    targets = []
    for app in sorted(executor.loader.migrated_apps | set(FIXTURE["migrations"])):
        names = FIXTURE["migrations"].get(app)
        if not names:
            targets.append((app, None))
            continue
        nodes = [(app, name) for name in names]
        targets.append(max(nodes, key=lambda node: len(graph.forwards_plan(node))))
    return targets


def insert_recorded_rows() -> None:
    """Every recorded row, by table and column name, with raw SQL, in one transaction: the
    foreign keys are checked at commit (deferred on both databases), so circular references
    (an output and its lease, a channel and its live deployment) go in as they are."""
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        for table, content in RECORDED.tables.items():
            assert table in tables, f"{table} is missing from the recorded migration state"
            columns = [name for name, _ in content["columns"]]
            described = connection.introspection.get_table_description(cursor, table)
            assert sorted(column.name for column in described) == sorted(columns), (
                f"{table}: the recorded migrations make other columns than the recorded rows have"
            )
            cursor.execute(f"SELECT COUNT(*) FROM {quote(table)}")
            if cursor.fetchone()[0]:
                assert table in WRITTEN_BY_MIGRATE, f"{table} should start empty"
                cursor.execute(f"DELETE FROM {quote(table)}")
        for table, content in RECORDED.tables.items():
            if not content["rows"]:
                continue
            fields = [getattr(models, kind)() for _, kind in content["columns"]]
            names = ", ".join(quote(name) for name, _ in content["columns"])
            marks = ", ".join(["%s"] * len(fields))
            cursor.executemany(
                f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})",
                [
                    [
                        field.get_db_prep_save(value, connection)
                        for field, value in zip(fields, row, strict=True)
                    ]
                    for row in content["rows"]
                ],
            )
        if connection.vendor == "postgresql":
            # Rows went in with their ids: move each identity sequence past them, or the next
            # insert (migrate's new permissions, to begin with) would reuse an id. SQLite's
            # AUTOINCREMENT follows explicit ids by itself.
            for table, content in RECORDED.tables.items():
                kinds = dict(content["columns"])
                key = content["primary_key"]
                if kinds[key] in AUTO_KEYS:
                    cursor.execute(
                        f"SELECT setval(pg_get_serial_sequence(%s, %s), "
                        f"COALESCE(MAX({quote(key)}), 1), MAX({quote(key)}) IS NOT NULL) "
                        f"FROM {quote(table)}",
                        [table, key],
                    )
    ContentType.objects.clear_cache()


def table_keys(table: str) -> list:
    key = RECORDED.tables[table]["primary_key"]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote(key)} FROM {quote(table)}")
        return [row[0] for row in cursor.fetchall()]


def recorded_keys(table: str) -> list:
    key = RECORDED.tables[table]["primary_key"]
    kind = dict(RECORDED.tables[table]["columns"])[key]
    field = getattr(models, kind)()
    # As the database returns them (a UUID is a hex string on SQLite).
    return [
        field.get_db_prep_save(row[key], connection)
        if kind == "UUIDField" and not connection.features.has_native_uuid_field
        else field.to_python(row[key])
        for row in RECORDED.rows(table)
    ]


def admin_client() -> APIClient:
    """Signed in with the token the old admin had: tokens survive the upgrade too."""
    admin = next(row for row in RECORDED.rows("auth_user") if row["username"] == "admin")
    token = next(row for row in RECORDED.rows("authtoken_token") if row["user_id"] == admin["id"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token['key']}")
    return client


def get(client: APIClient, url: str) -> Any:
    answer = client.get(url)
    assert answer.status_code == 200, f"GET {url}: {answer.status_code} {answer.content[:300]}"
    return answer.json()


def get_all(client: APIClient, url: str) -> list:
    """Every result of a paginated list, following `next` from page to page."""
    rows: list = []
    while url:
        page = get(client, url)
        rows.extend(page["results"])
        url = page["next"]
    return rows


def moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@pytest.mark.once
def test_the_fixture_covers_every_table_of_the_project():
    """A table left empty would prove nothing about its upgrade."""
    project = ("reviews_", "datasets_app_", "training_app_")
    tables = [table for table in RECORDED.tables if table.startswith(project)]
    assert len(tables) == 26
    assert [table for table in tables if not RECORDED.tables[table]["rows"]] == []


@pytest.mark.django_db(transaction=True)
def test_an_old_database_upgrades_and_reads_back_through_the_api(upgraded_database):
    executor = MigrationExecutor(connection)
    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []

    # Nothing lost: the same rows in every table (their names are kept by the move), and
    # the same primary keys where migrate may add rows.
    for table in RECORDED.tables:
        keys, recorded = table_keys(table), recorded_keys(table)
        if table in WRITTEN_BY_MIGRATE:
            assert set(recorded) <= set(keys), f"{table}: recorded rows are gone"
        else:
            assert sorted(keys) == sorted(recorded), f"{table}: rows differ after the upgrade"
    # Each role keeps the very permission rows it was granted (relabelled with a moved model).
    with connection.cursor() as cursor:
        cursor.execute("SELECT group_id, permission_id FROM auth_group_permissions")
        grants = set(cursor.fetchall())
    assert grants == {
        (row["group_id"], row["permission_id"]) for row in RECORDED.rows("auth_group_permissions")
    }

    # The audit chain verifies, to the head recorded before the upgrade, and its table still
    # refuses changes (the append-only triggers survived whatever the upgrade did to it).
    events = RECORDED.rows("reviews_auditevent")
    (head,) = RECORDED.rows("reviews_audithead")
    assert audit_verify() == len(events) == head["seq"]
    assert audit_verify_against_head(seq=head["seq"], head_hash=head["hash"]) == len(events)
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE reviews_auditevent SET action = action")

    client = admin_client()
    users = {row["id"]: row["username"] for row in RECORDED.rows("auth_user")}
    check_review_loop(client, users)
    check_datasets_and_training(client, users)
    check_governance(client, users)
    check_monitoring(client, users)

    verdict = get(client, "/api/audit/verify/")
    assert verdict["ok"] is True and verdict["events"] == len(events)
    listed = get_all(client, "/api/audit/?limit=500")
    assert [(e["seq"], e["action"], e["object_type"], e["object_id"], e["hash"])
            for e in listed] == [
        (e["seq"], e["action"], e["object_type"], e["object_id"], e["hash"]) for e in events
    ]  # fmt: skip
    assert [moment(e["created_at"]) for e in listed] == [moment(e["created_at"]) for e in events]

    # And it takes new writes: new rows get new ids (the sequences moved past the old rows),
    # and the audit chain goes on from the old head.
    answer = client.post(
        "/api/outputs/",
        {"external_id": "after-upgrade", "model_name": "harbor", "input": "Hi?", "output": "Hi."},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["items"][0]["id"] > max(RECORDED.by_id("reviews_output"))
    assert audit_verify() == len(events) + 1


def check_review_loop(client: APIClient, users: dict[int, str]) -> None:
    queues = RECORDED.by_id("reviews_queue")
    rules = RECORDED.by_id("reviews_routingrule")
    outputs = RECORDED.by_id("reviews_output")
    listed = get_all(client, "/api/outputs/?limit=500")
    assert sorted(o["id"] for o in listed) == sorted(outputs)
    for pk, row in outputs.items():
        answer = get(client, f"/api/outputs/{pk}/")
        assert answer["queue"] == (queues[row["queue_id"]]["name"] if row["queue_id"] else None)
        assert answer["routing_rule"] == (
            rules[row["routing_rule_id"]]["name"] if row["routing_rule_id"] else None
        )
        for field in ("external_id", "source", "model_version", "input", "output_text", "status",
                      "resolution", "resolved_by", "final_output", "reviews_done", "is_gold",
                      "tags", "metadata", "priority", "confidence"):  # fmt: skip
            assert answer[field] == row[field], f"output {pk}: {field}"
        assert moment(answer["resolved_at"]) == moment(row["resolved_at"])

    reviews = RECORDED.by_id("reviews_review")
    listed = get_all(client, "/api/reviews/?limit=500")
    assert sorted(r["id"] for r in listed) == sorted(reviews)
    for answer in listed:
        row = reviews[answer["id"]]
        assert answer["output"] == row["output_id"]
        assert answer["reviewer"] == users[row["reviewer_id"]]
        assert answer["queue"] == queues[row["queue_id"]]["name"]
        for field in ("decision", "stage", "corrected_output", "reason", "comment", "diff"):
            assert answer[field] == row[field], f"review {row['id']}: {field}"

    listed = get_all(client, "/api/queues/")
    assert {q["id"]: q["name"] for q in listed} == {pk: q["name"] for pk, q in queues.items()}
    versions: dict[int, int] = {}
    for row in RECORDED.rows("reviews_guidelineversion"):
        versions[row["queue_id"]] = max(versions.get(row["queue_id"], 0), row["version"])
    assert {q["id"]: q["guidelines_version"] for q in listed if q["guidelines_version"]} == versions
    listed = get_all(client, "/api/routing-rules/")
    assert {r["id"]: (r["name"], r["position"], r["action"]) for r in listed} == {
        pk: (r["name"], r["position"], r["action"]) for pk, r in rules.items()
    }


def check_datasets_and_training(client: APIClient, users: dict[int, str]) -> None:
    for pk, row in RECORDED.by_id("datasets_app_datasetversion").items():
        answer = get(client, f"/api/datasets/{pk}/")
        for field in ("name", "status", "manifest_hash", "counts", "settings"):
            assert answer[field] == row[field], f"dataset version {pk}: {field}"
        assert answer["created_by"] == users[row["created_by_id"]]
        members = [m for m in RECORDED.rows("datasets_app_datasetversionexample")
                   if m["version_id"] == pk]  # fmt: skip
        assert answer["counts"]["total"] == len(members)

    versions = RECORDED.by_id("training_app_modelversion")
    for pk, row in RECORDED.by_id("training_app_trainingrun").items():
        answer = get(client, f"/api/training-runs/{pk}/")
        assert answer["status"] == row["status"]
        assert answer["dataset_version"] == row["dataset_version_id"]
        assert answer["parent_version"] == row["parent_version_id"]
        assert answer["created_by"] == users[row["created_by_id"]]
        (version,) = [v for v in versions.values() if v["run_id"] == pk]
        assert answer["model_version"]["id"] == version["id"]

    evaluations = RECORDED.rows("training_app_evaluation")
    listed = get_all(client, "/api/model-versions/?limit=500")
    assert sorted(v["id"] for v in listed) == sorted(versions)
    for pk, row in versions.items():
        answer = get(client, f"/api/model-versions/{pk}/")
        for field in ("name", "status", "manifest", "metrics", "config", "base_model_ref"):
            assert answer[field] == row[field], f"model version {row['name']}: {field}"
        assert answer["run"] == row["run_id"] and answer["parent"] == row["parent_id"]
        assert sorted((e["id"], e["status"], e["split"]) for e in answer["evaluations"]) == sorted(
            (e["id"], e["status"], e["split"]) for e in evaluations if e["version_id"] == pk
        )


def check_governance(client: APIClient, users: dict[int, str]) -> None:
    channels = RECORDED.by_id("training_app_channel")
    versions = RECORDED.by_id("training_app_modelversion")
    approvals = RECORDED.rows("training_app_approval")
    evaluations = RECORDED.rows("training_app_evaluation")
    for pk, row in RECORDED.by_id("training_app_signoffrequest").items():
        answer = get(client, f"/api/signoff-requests/{pk}/")
        assert answer["status"] == row["status"] and answer["policy"] == row["policy"]
        assert answer["channel"] == channels[row["channel_id"]]["name"]
        assert answer["version"] == {
            "id": row["version_id"],
            "name": versions[row["version_id"]]["name"],
        }
        assert answer["requested_by"] == users[row["requested_by_id"]]
        assert [(a["approver"], a["decision"], a["comment"]) for a in answer["approvals"]] == [
            (users[a["approver_id"]], a["decision"], a["comment"])
            for a in sorted(approvals, key=lambda a: a["created_at"])
            if a["request_id"] == pk
        ]
        # The comparisons made for this request, with what they were run against.
        assert sorted((e["id"], e["status"], e["split"], e["metrics"])
                      for e in answer["evaluations"]) == sorted(
            (e["id"], e["status"], e["split"], e["metrics"])
            for e in evaluations if e["signoff_request_id"] == pk
        )  # fmt: skip

    deployments = RECORDED.by_id("training_app_deployment")
    cases = RECORDED.rows("training_app_regressioncase")
    listed = get_all(client, "/api/channels/")
    assert sorted(c["name"] for c in listed) == sorted(c["name"] for c in channels.values())
    for pk, row in channels.items():
        answer = get(client, f"/api/channels/{row['name']}/")
        assert answer["description"] == row["description"]
        assert answer["regression_cases"] == len([c for c in cases if c["channel_id"] == pk])
        if row["live_version_id"] is None:
            assert answer["live"] is None
        else:
            live = answer["live"]
            assert live is not None and live["id"] == row["live_version_id"], row["name"]
            deployed = deployments[row["live_deployment_id"]]
            assert moment(live["deployed_at"]) == moment(deployed["created_at"])
            manifest = versions[row["live_version_id"]]["manifest"]
            assert {f["name"]: f["sha256"] for f in live["adapter"]["files"]}.items() <= (
                manifest.items()
            )
        history = get_all(client, f"/api/channels/{row['name']}/history/")
        assert sorted((d["id"], d["action"], d["version"]["id"], d["by"], d["manifest_digest"])
                      for d in history) == sorted(
            (d["id"], d["action"], d["version_id"], users[d["actor_id"]], d["manifest_digest"])
            for d in deployments.values() if d["channel_id"] == pk
        )  # fmt: skip


def check_monitoring(client: APIClient, users: dict[int, str]) -> None:
    channels = RECORDED.by_id("training_app_channel")
    alerts = get_all(client, "/api/monitoring/alerts/")
    assert sorted(
        (a["id"], a["version"], a["channel"], a["metric"], a["status"], a["acknowledged_by"],
         a["observed"], a["samples"]) for a in alerts
    ) == sorted(
        (a["id"], a["version_id"], channels[a["channel_id"]]["name"], a["metric"], a["status"],
         users.get(a["acknowledged_by_id"]), a["observed"], a["samples"])
        for a in RECORDED.rows("training_app_driftalert")
    )  # fmt: skip

    hooks = RECORDED.by_id("training_app_webhook")
    listed = get_all(client, "/api/webhooks/")
    assert sorted((h["id"], h["name"], h["url"], h["events"]) for h in listed) == sorted(
        (pk, h["name"], h["url"], h["events"]) for pk, h in hooks.items()
    )
    deliveries = get_all(client, "/api/webhooks/deliveries/")
    assert sorted(
        (d["id"], d["webhook"], d["event"], d["status"], d["attempts"], d["last_status_code"])
        for d in deliveries
    ) == sorted(
        (d["id"], hooks[d["webhook_id"]]["name"], d["event"], d["status"], d["attempts"],
         d["last_status_code"])
        for d in RECORDED.rows("training_app_webhookdelivery")
    )  # fmt: skip
