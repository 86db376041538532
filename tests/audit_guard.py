"""The test suite's flush lifts the audit log's append-only triggers (reviews/audit_guard.py)."""

import functools
from collections.abc import Callable

from core.audit.guard import guard_statements, lift_audit_guard, run_deferred_checks

__all__ = ["flush_lifting_the_guard", "lift_audit_guard", "run_deferred_checks"]


def flush_lifting_the_guard(execute_sql_flush: Callable) -> Callable:
    """Wrap a backend's execute_sql_flush so that Django's flush (TRUNCATE on PostgreSQL, DELETE
    on SQLite), which the triggers refuse, lifts them first and puts them back in its own
    transaction. `__wrapped__` is the plain flush, which `manage.py flush` runs."""

    @functools.wraps(execute_sql_flush)
    def flush(self, sql_list):
        if not sql_list:
            return execute_sql_flush(self, sql_list)
        lift, restore = guard_statements(self.connection)
        return execute_sql_flush(self, [*lift, *sql_list, *restore])

    return flush
