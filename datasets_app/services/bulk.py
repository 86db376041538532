"""Fast inserts of many rows: COPY on PostgreSQL, one executemany elsewhere."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection, models

WRITE_BATCH = 5000


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    """Insert many rows of one model fast (see insert_tuples); every row must carry every
    column named by the first row."""
    if not rows:
        return
    names = list(rows[0])
    insert_tuples(model, names, [[row[name] for name in names] for row in rows])


_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(ensure_ascii=False), built once


def insert_tuples(model: type[models.Model], names: list[str], rows: list[list[Any]]) -> None:
    """Insert many rows of one model fast: COPY on PostgreSQL, one executemany elsewhere.

    A version of 100,000 examples must be written in seconds; the ORM's bulk_create spends
    most of that building model objects and adapting values one by one. `rows` hold values in
    the order of `names` (field names), JSON fields as Python values (dumped here), datetimes
    aware, None as NULL. The lists are changed in place. Runs inside the caller's transaction.
    """
    if not rows:
        return
    fields = [model._meta.get_field(name) for name in names]
    columns = [field.column for field in fields]
    json_at = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    time_at = [i for i, f in enumerate(fields) if isinstance(f, models.DateTimeField)]
    if connection.vendor == "postgresql":
        time_at = []  # psycopg adapts aware datetimes itself
    adapt_time = connection.ops.adapt_datetimefield_value
    dump = _JSON.encode
    for row in rows:
        for i in json_at:
            if row[i] is not None:  # None is SQL NULL, as the ORM stores it
                row[i] = dump(row[i])
        for i in time_at:
            row[i] = adapt_time(row[i])
    table = connection.ops.quote_name(model._meta.db_table)
    column_list = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(columns))
            sql = f"INSERT INTO {table} ({column_list}) VALUES ({marks})"
            for start in range(0, len(rows), WRITE_BATCH):
                cursor.executemany(sql, rows[start : start + WRITE_BATCH])
