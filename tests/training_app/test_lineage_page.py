"""The version's lineage page: every example row names the people who reviewed its output,
in a fixed number of queries however many rows the page shows."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reviews.models import Review

from .governance_helpers import make_version


def _review(output, reviewer, *, stage="review", undone=False):
    return Review.objects.create(
        output=output,
        reviewer=reviewer,
        queue=output.queue,
        stage=stage,
        decision="approve",
        original_output=output.output_text,
        undone_at=timezone.now() if undone else None,
    )


@pytest.fixture
def version(personas, make_dataset_version, tiny_base_model, training_dirs, tmp_path):
    dataset = make_dataset_version(3, 1)
    return make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)


def _rows(page: str) -> list[str]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return body.split("<tr>")[1:]


def test_each_lineage_row_names_its_reviewers(client, personas, make_user, version):
    members = list(version.dataset_version.members.select_related("example__output"))
    first, second = members[0].example.output, members[1].example.output
    _review(first, personas["reviewer"])
    _review(first, personas["reviewer2"])
    _review(second, personas["reviewer"])
    _review(second, personas["lead"], stage="lead")
    _review(second, make_user("reviewer", username="tookitback"), undone=True)

    client.force_login(personas["auditor"])
    page = client.get(f"/training/versions/{version.pk}/lineage/").content.decode()

    rows = {row.split("output ", 1)[1].split(":", 1)[0]: row for row in _rows(page)}
    assert "<td>reviewer, reviewer2</td>" in rows[str(first.pk)]
    assert "<td>reviewer, lead (lead)</td>" in rows[str(second.pk)]
    assert "tookitback" not in page  # an undone decision is no part of the provenance
    unreviewed = [row for pk, row in rows.items() if pk not in {str(first.pk), str(second.pk)}]
    assert unreviewed and all("<td>—</td></tr>" in row for row in unreviewed)


def test_the_lineage_page_reads_reviewers_without_a_query_per_row(
    client, personas, make_user, version
):
    url = f"/training/versions/{version.pk}/lineage/"
    client.force_login(personas["auditor"])
    members = list(version.dataset_version.members.select_related("example__output"))
    _review(members[0].example.output, personas["reviewer"])
    with CaptureQueriesContext(connection) as one_reviewed:
        client.get(url)
    for index, member in enumerate(members):
        _review(member.example.output, make_user("reviewer", username=f"extra{index}"))
        _review(member.example.output, personas["reviewer2"])
    with CaptureQueriesContext(connection) as all_reviewed:
        page = client.get(url).content.decode()
    assert all(f"extra{index}" in page for index in range(len(members)))
    review_reads = [q for q in all_reviewed.captured_queries if '"reviews_review"' in q["sql"]]
    assert len(review_reads) == 1  # one for the page, not one per row
    assert len(all_reviewed) == len(one_reviewed)  # and no reviewer is fetched on its own
