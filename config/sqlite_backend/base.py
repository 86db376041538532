"""SQLite, with writers queued on an operating-system file lock.

SQLite lets one writer in at a time; the others poll with growing sleeps (up to 100 ms each) and
an unlucky one can miss its turn until the busy timeout fires, so under 8 concurrent reviewers
a few claims waited seconds and some got "database is locked". Taking an exclusive `flock` on a
side file before `BEGIN IMMEDIATE` makes waiters sleep in the kernel and wake when the writer
commits: the lottery becomes a queue. (Polling the lock every millisecond instead gave a lower
median but a p99 five times worse: newcomers barge past sleepers.) Readers are not affected
(WAL), and a crashed process releases its lock with its file descriptor.
"""

import fcntl
import os

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    _write_lock_fd: int | None = None

    def _write_lock_path(self) -> str | None:
        name = str(self.settings_dict["NAME"])
        if not name or name == ":memory:" or name.startswith("file:"):
            return None
        return name + ".writelock"

    def _acquire_write_lock(self) -> None:
        path = self._write_lock_path()
        if path is None or self._write_lock_fd is not None:
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._write_lock_fd = fd

    def _release_write_lock(self) -> None:
        fd, self._write_lock_fd = self._write_lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def _start_transaction_under_autocommit(self) -> None:
        if self.transaction_mode == "IMMEDIATE":
            self._acquire_write_lock()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_write_lock()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._release_write_lock()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._release_write_lock()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._release_write_lock()
