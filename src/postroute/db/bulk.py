"""Bulk statements without the ORM's per-row machinery: Core ``executemany`` (PostgreSQL)
or, on SQLite, positional rows converted by SQLAlchemy's own bind processors and handed
to aiosqlite's connection in one go; ``fetch_all`` for a read in one hand-off."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler

# Core executemany (PostgreSQL) or its positional form (SQLite): the ORM's bulk paths cost
# about twice the CPU per row and add nothing for plain rows keyed by column name.


async def insert_many(
    session: AsyncSession, table: sa.Table, rows: Sequence[dict[str, Any]]
) -> None:
    if not rows:
        return
    conn = await session.connection()
    keys = tuple(rows[0])
    plan = positional_insert(table, keys, conn.dialect) if conn.dialect.name == "sqlite" else None
    if plan is None or any(len(row) != len(keys) for row in rows):
        await conn.execute(sa.insert(table), list(rows))
        return
    await _executemany(conn, plan, rows)


async def _executemany(conn: AsyncConnection, plan: Plan, rows: Sequence[dict[str, Any]]) -> None:
    """On aiosqlite's connection itself: one hand-off to its thread. Through SQLAlchemy's
    cursor a statement takes three (cursor, execute, close), and in a busy event loop each
    return waits its turn: the write lock is held that much longer. The statement runs in
    the transaction SQLAlchemy began on this connection; errors are SQLAlchemy's (without
    the parameters), as from ``conn.execute``: a DBAPIError for the database's, else a
    StatementError (e.g. a row without one of the keys: nothing is written)."""
    sql = plan[0]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "a connection in a transaction has its driver connection"
    try:
        await driver.executemany(sql, positional_rows(plan, rows))
    except Exception as exc:
        raise sa.exc.DBAPIError.instance(
            sql, None, exc, sqlite3.Error, hide_parameters=True
        ) from None


def positional_rows(plan: Plan, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each row as the statement's positional parameters, converted as SQLAlchemy would."""
    _, get, todo = plan
    return [processed(list(get(row)), todo) for row in rows]


Getter = Callable[[dict[str, Any]], Sequence[Any]]
Plan = tuple[str, Getter, list[tuple[int, Callable[[Any], Any]]]]


@lru_cache(maxsize=128)
def positional_insert(table: sa.Table, keys: tuple[str, ...], dialect: Dialect) -> Plan | None:
    """SQLite: the INSERT as SQLAlchemy compiles it for these keys, and its bind
    processors (the same conversions as ``conn.execute``), so that each row becomes a tuple
    without SQLAlchemy's per-row parameter machinery (half the send's insert CPU). None
    when a column left out has a Python-side default: that needs the full path."""
    if any(c.key not in keys and c.default is not None for c in table.c):
        return None
    return positional(sa.insert(table), dialect, keys)


@lru_cache(maxsize=256)
def positional(
    stmt: sa.Insert | sa.Update, dialect: Dialect, keys: tuple[str, ...] | None = None
) -> Plan | None:
    """The compiled SQL, a getter of the row values in its parameter order (bind names are
    the column keys, or ``_<key>`` in :func:`_update`) and the bind processors to apply.
    None for a table with ``onupdate`` columns: SQLAlchemy would add those itself."""
    table = stmt.table
    if not isinstance(table, sa.Table) or any(c.onupdate is not None for c in table.c):
        return None
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
    names = compiled.positiontup
    if not names or len(names) < 2:
        return None
    processors: dict[str, Any] = dict(compiled._bind_processors)
    processed = [(i, processors[name]) for i, name in enumerate(names) if name in processors]
    columns = [n[1:] if isinstance(stmt, sa.Update) else n for n in names]
    get: Getter = itemgetter(*columns)
    return str(compiled), get, processed


async def fetch_all(
    session: AsyncSession, stmt: sa.Select[*tuple[Any, ...]], params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """The rows of ``stmt`` (a statement built once, with named bind parameters) for
    ``params``, in the session's transaction. On SQLite in one hand-off to aiosqlite's
    thread and with the values as the driver returns them (a timestamp is its text): for
    comparing with rows read the same way, not for showing. Elsewhere SQLAlchemy's rows."""
    conn = await session.connection()
    if conn.dialect.name != "sqlite":
        return [tuple(row) for row in (await conn.execute(stmt, params)).all()]
    sql, values = positional_params(stmt, conn.dialect, params)
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "a connection in a transaction has its driver connection"
    try:
        rows = await driver.execute_fetchall(sql, values)
    except Exception as exc:
        raise sa.exc.DBAPIError.instance(
            sql, None, exc, sqlite3.Error, hide_parameters=True
        ) from None
    return [tuple(row) for row in rows]


_Processed = list[tuple[int, Callable[[Any], Any]]]


def positional_params(
    stmt: sa.ClauseElement, dialect: Dialect, params: dict[str, Any]
) -> tuple[str, list[Any]]:
    """SQLite: ``stmt``'s SQL and ``params`` (by bind name) as its positional values."""
    compiled = named(stmt, dialect)
    return compiled.sql, list(compiled.values(params))


@dataclass(frozen=True)
class Named:
    """A statement compiled for a positional dialect: its SQL, the bind names in parameter
    order, the bind processors to apply, and the values of binds that carry their own
    (``.values(state="queued")``: not given per row)."""

    sql: str
    names: list[str]
    todo: _Processed
    fixed: dict[str, Any]

    def values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        fixed = self.fixed
        return processed(
            [row[n] if n in row or n not in fixed else fixed[n] for n in self.names], self.todo
        )


@lru_cache(maxsize=64)
def named(stmt: sa.ClauseElement, dialect: Dialect) -> Named:
    """A statement built once (named bind parameters) compiled for a positional dialect."""
    compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
    names = list(compiled.positiontup or ())
    processors: dict[str, Any] = dict(compiled._bind_processors)
    todo = [(i, processors[n]) for i, n in enumerate(names) if n in processors]
    fixed = {
        name: bind.value
        for name, bind in compiled.binds.items()
        if not bind.required and bind.callable is None
    }
    return Named(str(compiled), names, todo, fixed)


def column_bind(table: sa.Table, name: str, key: str | None = None) -> sa.BindParameter[Any]:
    """A bind parameter typed like a column (its processor applies), named after it or
    ``key`` (an UPDATE executed for many rows reserves its columns' names)."""
    return sa.bindparam(key or name, type_=table.c[name].type)


def processed(values: list[Any], todo: _Processed) -> tuple[Any, ...]:
    for index, process in todo:
        values[index] = process(values[index])
    return tuple(values)


async def update_by_key(
    session: AsyncSession, table: sa.Table, key: str, rows: Sequence[dict[str, Any]]
) -> None:
    """``UPDATE table SET ... WHERE key = :key`` for each row, one executemany per set of
    columns (rows may set different columns)."""
    statements = updates_by_key(table, key, rows)
    if not statements:
        return
    conn = await session.connection()
    for stmt, group in statements:
        plan = positional(stmt, conn.dialect) if conn.dialect.name == "sqlite" else None
        if plan is None:
            await conn.execute(stmt, [{f"_{c}": v for c, v in row.items()} for row in group])
        else:
            await _executemany(conn, plan, group)


def updates_by_key(
    table: sa.Table, key: str, rows: Sequence[dict[str, Any]]
) -> list[tuple[sa.Update, list[dict[str, Any]]]]:
    """The statement per set of columns set (bind names ``_<column>``) and its rows."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(c for c in row if c != key)), []).append(row)
    return [(_update(table, key, columns), group) for columns, group in groups.items()]


@lru_cache(maxsize=128)
def _update(table: sa.Table, key: str, columns: tuple[str, ...]) -> sa.Update:
    return (
        sa.update(table)
        .where(table.c[key] == sa.bindparam(f"_{key}"))
        .values({c: sa.bindparam(f"_{c}") for c in columns})
    )
