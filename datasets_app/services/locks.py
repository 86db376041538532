"""Lock the outputs a version uses (their reviews can no longer be undone) and check that they
did not change since their examples were read: portable statements, and one PostgreSQL
statement that also row-locks them until commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection

from reviews.models import Output, OutputLock

from ..models import Example

_DONE_STATUSES = (Output.Status.RESOLVED, Output.Status.AUTO_ACCEPTED)
ID_CHUNK = 20000  # ids per statement where a backend takes no array parameter


def _by_ids(
    sql: str, column: str, ids: list[int], params: list[Any], after: tuple[Any, ...] = ()
) -> list[tuple]:
    """Run `sql`, whose `{ids}` stands for a condition on `column`, over the given ids: one
    statement with an array on PostgreSQL, chunks of IN lists elsewhere. `params` come before
    the condition's, `after` after them."""
    rows: list[tuple] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(sql.format(ids=f"{column} = ANY(%s)"), [*params, ids, *after])
            return cursor.fetchall() if cursor.description else []
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(sql.format(ids=f"{column} IN ({marks})"), [*params, *chunk, *after])
            if cursor.description:
                rows += cursor.fetchall()
    return rows


def _lock_outputs(*, example_ids: list[int], now: datetime) -> list[int]:
    """Lock the examples' outputs not locked yet (an OutputLock each: their reviews can no
    longer be undone), and return those outputs. The portable path; SQLite runs one write
    transaction at a time, so nothing can undo a review in between (PostgreSQL: see
    `_LOCK_AND_CHECK_SQL`). The outputs are named through the example ids read for the build,
    and no statement joins the lock table: its statistics are often stale (empty before a
    first build), and the planner's guess then made such a join a scan of it per output."""
    quote = connection.ops.quote_name
    rows = _by_ids(
        f"INSERT INTO {quote(OutputLock._meta.db_table)} (output_id, locked_at) "
        f"SELECT e.output_id, %s FROM {quote(Example._meta.db_table)} AS e WHERE {{ids}} "
        "ON CONFLICT (output_id) DO NOTHING RETURNING output_id",
        "e.id",
        example_ids,
        [now],
    )
    return sorted(row[0] for row in rows)


def _outputs_changed(*, output_ids: list[int]) -> list[int]:
    """Those of the outputs that are no longer resolved the way their example was made from (a
    review undone, or re-resolved, between reading the examples and locking the outputs):
    compared in the database, read after the lock, so nothing slips by."""
    quote = connection.ops.quote_name
    done = ", ".join(f"'{status}'" for status in _DONE_STATUSES)
    rows = _by_ids(
        f"SELECT o.id FROM {quote(Example._meta.db_table)} AS e "
        f"JOIN {quote(Output._meta.db_table)} AS o ON o.id = e.output_id "
        "WHERE {ids} AND NOT ("
        f"o.status IN ({done}) AND o.resolution = e.label AND (o.resolved_at = e.resolved_at "
        "OR (o.resolved_at IS NULL AND e.resolved_at IS NULL)))",
        "o.id",
        output_ids,
        [],
    )
    return sorted(row[0] for row in rows)


def _lock_and_check_sql() -> str:
    """PostgreSQL: `_lock_outputs` and `_outputs_changed` in one statement. The outputs locked
    now are also row-locked FOR SHARE until commit, and their state is read under that lock:
    the review loop's undo locks an output's row before it looks for a lock, so one that comes
    after this waits for the build and then finds the lock, and one that came first is seen
    here (the build then fails). Two builds locking the same outputs both succeed (ON
    CONFLICT). Returns (output id, changed) for every output locked now."""
    quote = connection.ops.quote_name
    output, example = quote(Output._meta.db_table), quote(Example._meta.db_table)
    done = ", ".join(f"'{status}'" for status in _DONE_STATUSES)
    return (
        f"WITH fresh AS (INSERT INTO {quote(OutputLock._meta.db_table)} (output_id, locked_at) "
        f"SELECT e.output_id, %s FROM {example} AS e WHERE e.id = ANY(%s) "
        "ON CONFLICT (output_id) DO NOTHING RETURNING output_id) "
        f"SELECT o.id, NOT (o.status IN ({done}) AND o.resolution = e.label "
        "AND (o.resolved_at = e.resolved_at OR (o.resolved_at IS NULL AND e.resolved_at IS NULL))) "
        f"FROM fresh JOIN {output} AS o ON o.id = fresh.output_id "
        f"JOIN {example} AS e ON e.output_id = o.id ORDER BY o.id FOR SHARE OF o"
    )
