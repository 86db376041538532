"""The database-side sync (PostgreSQL) makes exactly the rows the Python path makes."""

from datetime import UTC, datetime

import pytest
from django.db import connection

from datasets_app import services
from datasets_app.models import Example
from datasets_app.services import sync
from reviews.models import Output, Review

pytestmark = pytest.mark.django_db

COMPARED = [
    f.name
    for f in Example._meta.concrete_fields
    if f.name not in ("id", "created_at", "updated_at")
]


def _rows() -> dict[int, dict]:
    return {row["output"]: row for row in Example.objects.values(*COMPARED)}


def _outputs(resolved):
    made = [
        resolved("What is the excess?", "It is 100."),
        resolved("Is a fence covered?", "Yes.", resolution="corrected", correction="No."),
        resolved("Consensus here?", "Sure.", by="consensus", tags=["billing", "vip"]),
        resolved("Lead decided?", "Maybe.", resolution="corrected", correction="No.", by="lead"),
        resolved("Rejected one", "Bad answer.", resolution="rejected"),
        resolved("Auto", "Fine.", status=Output.Status.AUTO_ACCEPTED),
        resolved(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi\u00a0there  \u00e9"},
                {"role": "assistant"},
                {"content": None},
                "not a message",
                {"role": "user", "content": "Again?"},
            ],
            "Hello.",
        ),
        resolved([], "Empty chat input."),
        # Shapes only the Python path reproduces (str() of non-strings): it must still make them.
        resolved([{"role": None, "content": 5}], "Odd roles."),
        resolved({"question": "a dict input"}, "Odd input."),
        resolved([{"role": "user", "content": {"nested": True}}], "Nested content."),
    ]
    # A whole-second time (isoformat then has no fraction) and a gold review (not counted).
    Output.objects.filter(pk=made[0].pk).update(
        resolved_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    first = Review.objects.filter(output=made[0]).first()
    Review.objects.filter(pk=first.pk).update(created_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC))
    Review.objects.create(
        output=made[2],
        reviewer=first.reviewer,
        queue=first.queue,
        stage=Review.Stage.GOLD,
        decision="reject",
        original_output="Sure.",
    )
    return made


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the SQL path is PostgreSQL's")
def test_it_makes_the_same_examples_in_the_database_as_in_python(resolved, monkeypatch):
    outputs = _outputs(resolved)
    made = sync._sync_in_database(sorted(o.pk for o in outputs))
    assert len(made) == len(outputs) - 3  # the odd shapes are left to Python
    assert sync._sync_in_database(sorted(made)) == set()  # made already: skipped
    assert services.examples_sync().created == 3
    fast = _rows()
    Example.objects.all().delete()
    monkeypatch.setattr(sync, "_sync_in_database", lambda ids: set())
    assert services.examples_sync().created == len(outputs)
    reference = _rows()
    assert fast.keys() == reference.keys() == {o.pk for o in outputs}
    for output_id, row in reference.items():
        assert fast[output_id] == row, output_id
    consensus = reference[outputs[2].pk]  # two agreeing reviews; the gold one is not counted
    assert consensus["weight"] == 2.0 and consensus["reviewer_count"] == 2


def test_the_sync_makes_every_shape_of_output_on_any_database(resolved):
    outputs = _outputs(resolved)
    assert services.examples_sync().created == len(outputs)
    rows = _rows()
    assert rows[outputs[8].pk]["messages"][0] == {"role": "None", "content": "5"}
    assert rows[outputs[6].pk]["messages"][-1] == {"role": "assistant", "content": "Hello."}
    assert services.examples_sync().created == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the SQL path is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_large_sync_split_over_two_connections_makes_the_same_examples(resolved, monkeypatch):
    outputs = _outputs(resolved)
    sequential = sync._sync_in_database(sorted(o.pk for o in outputs))
    reference = _rows()
    Example.objects.all().delete()
    monkeypatch.setattr(sync, "SYNC_PARALLEL_MIN", 2)
    threads = []
    real = sync._sync_chunk_in_thread
    monkeypatch.setattr(
        sync, "_sync_chunk_in_thread", lambda ids: threads.append(len(ids)) or real(ids)
    )
    assert sync._sync_in_database(sorted(o.pk for o in outputs)) == sequential
    assert len(threads) == 2 and sum(threads) == len(outputs)
    assert _rows() == reference
    # Another sync of the same outputs (a second build, say) makes nothing twice.
    assert sync._sync_in_database(sorted(o.pk for o in outputs)) == set()
