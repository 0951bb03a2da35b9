"""The database: engine and sessions (:mod:`.engine`), bulk statements (:mod:`.bulk`),
writes described once (:mod:`.changes`) and run where the backend wants them
(:mod:`.store`; SQLite's one-hand-off writer in :mod:`.sqlite`)."""

from postroute.db.bulk import (
    column_bind,
    fetch_all,
    insert_many,
    named,
    positional,
    positional_insert,
    positional_params,
    positional_rows,
    processed,
    update_by_key,
    updates_by_key,
)
from postroute.db.engine import (
    LOCK_RETRY_FIRST,
    LOCK_RETRY_MAX,
    LOCK_TIMEOUT,
    SessionFactory,
    begin_read,
    create_engine,
    session_factory,
    transaction,
    tune_sqlite_connection,
)

__all__ = [
    "LOCK_RETRY_FIRST",
    "LOCK_RETRY_MAX",
    "LOCK_TIMEOUT",
    "SessionFactory",
    "begin_read",
    "column_bind",
    "create_engine",
    "fetch_all",
    "insert_many",
    "named",
    "positional",
    "positional_insert",
    "positional_params",
    "positional_rows",
    "processed",
    "session_factory",
    "transaction",
    "tune_sqlite_connection",
    "update_by_key",
    "updates_by_key",
]
