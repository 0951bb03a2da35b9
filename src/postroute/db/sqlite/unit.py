"""What one SQLite write transaction of :mod:`postroute.db.sqlite.writer` does: its guards
and statements (:class:`Unit`), built by the repositories from SQLAlchemy statements
compiled once for SQLite, and how a statement runs over many rows (:func:`run_step`).

A plain INSERT's rows go in multi-row statements, and an update of many rows is one
``UPDATE ... FROM (VALUES ...)``: ``executemany`` steps once per row and gives up the GIL
at each step.
"""

from __future__ import annotations

import functools
import itertools
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from postroute import db
from postroute.db.changes import Changes, Execute, Insert, UpdateByKey

Row = tuple[Any, ...]


@dataclass
class Unit:
    """One write transaction's guards and statements, compiled for SQLite."""

    dialect: Dialect
    guards: list[tuple[str, list[Any], list[Row]]] = field(default_factory=list)
    steps: list[tuple[str, list[Row]]] = field(default_factory=list)

    @classmethod
    def of(cls, changes: Changes, dialect: Dialect) -> Unit:
        """``changes`` compiled: SQL and converted values, ready for the writer's thread."""
        unit = cls(dialect)
        for guard in changes.guards:
            unit.guard(guard.stmt, guard.params, guard.rows)
        for step in changes.steps:
            if isinstance(step, Insert):
                unit.insert(step.table, step.rows)
            elif isinstance(step, UpdateByKey):
                unit.update(step.table, step.key, step.rows)
            elif isinstance(step, Execute):
                unit.execute(step.stmt, step.rows)
            else:
                unit.execute_once(step.stmt)
        return unit

    @classmethod
    def merged(cls, dialect: Dialect, units: Sequence[Unit]) -> Unit:
        """Several units as one: guards in order (a guard given again, expecting the same
        rows, is checked once; one expecting other rows is kept: the write is then stale);
        each plain INSERT's rows join its first step (other statements stay in order,
        apart). Units made alike (the same inserts in the same order, some left out) keep
        their order."""
        out = cls(dialect)
        seen: set[tuple[str, tuple[Any, ...], tuple[Row, ...]]] = set()
        first: dict[str, list[Row]] = {}
        for unit in units:
            for sql, params, rows in unit.guards:
                key = (sql, tuple(params), tuple(rows))
                if key not in seen:
                    seen.add(key)
                    out.guards.append((sql, params, rows))
            for sql, rows in unit.steps:
                mergeable = sql.startswith("INSERT INTO ")
                if mergeable and sql in first:
                    first[sql].extend(rows)
                    continue
                mine = list(rows)
                out.steps.append((sql, mine))
                if mergeable:
                    first[sql] = mine
        return out

    def guard(
        self,
        stmt: sa.Select[*tuple[Any, ...]],
        params: dict[str, Any] | None,
        rows: Sequence[Row],
    ) -> None:
        """``stmt`` must return exactly ``rows`` (with ``params``: as :func:`db.fetch_all`
        returns them; without, a statement holding its own values), else nothing is
        written (the writer raises ``Stale``)."""
        if params is None:
            sql, values = _expanded(stmt, self.dialect)
        else:
            sql, values = db.positional_params(stmt, self.dialect, params)
        self.guards.append((sql, values, list(rows)))

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Rows keyed by column (rows with other keys are a statement of their own)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        for keys, group in groups.items():
            plan = db.positional_insert(table, keys, self.dialect)
            if plan is None:
                raise ValueError(f"{table.name}: columns with Python defaults need the ORM path")
            self.steps.append((plan[0], db.positional_rows(plan, group)))

    def update(self, table: sa.Table, key: str, rows: Sequence[dict[str, Any]]) -> None:
        """``UPDATE table SET ... WHERE key = ...`` per row, as :func:`db.update_by_key`:
        rows with distinct keys in one ``UPDATE ... FROM (VALUES ...)`` per set of
        columns (one step for SQLite, see :func:`run_step`)."""
        for stmt, group in db.updates_by_key(table, key, rows):
            plan = db.positional(stmt, self.dialect)
            if plan is None:
                raise ValueError(f"{table.name}: onupdate columns need the ORM path")
            params = db.positional_rows(plan, group)
            keys = {p[-1] for p in params}  # as bound (the key's bind comes last)
            if (
                len(group) < 2
                or len(keys) < len(group)
                or not UPDATE_FROM
                or _unique_columns(table) & set(group[0])
            ):  # row by row: the same key twice, a UNIQUE column (checked per row), old SQLite
                self.steps.append((plan[0], params))
                continue
            # the plan's parameters: the SET columns in order, then the key (``_<name>``)
            names = [name[1:] for name in db.named(stmt, self.dialect).names]
            assert names[-1] == key, "the key's bind comes last (WHERE after SET)"
            quote = self.dialect.identifier_preparer.quote
            per = max(1, min(MULTI_ROWS, MAX_VARIABLES // len(names)))
            for start in range(0, len(params), per):
                chunk = params[start : start + per]
                sets = ", ".join(f"{quote(n)} = v.column{i}" for i, n in enumerate(names[:-1], 1))
                values = ", ".join(["(" + ", ".join("?" * len(names)) + ")"] * len(chunk))
                # names quoted by the dialect, every value bound
                sql = (
                    f"UPDATE {quote(table.name)} SET {sets} FROM (VALUES {values}) AS v "  # noqa: S608
                    f"WHERE {quote(table.name)}.{quote(key)} = v.column{len(names)}"
                )
                self.steps.append((sql, [tuple(itertools.chain.from_iterable(chunk))]))

    def execute_once(self, stmt: sa.ClauseElement) -> None:
        """``stmt`` with the values it holds (an ``IN`` list, say) as one statement: compiled
        here, not kept (:meth:`execute` is for statements built once)."""
        sql, values = _expanded(stmt, self.dialect)
        self.steps.append((sql, [tuple(values)]))

    def execute(self, stmt: sa.ClauseElement, rows: Sequence[dict[str, Any]]) -> None:
        """``stmt`` (a statement built once, with named bind parameters) for each row."""
        if rows:
            compiled = db.named(stmt, self.dialect)
            self.steps.append((compiled.sql, [compiled.values(row) for row in rows]))


def _expanded(stmt: sa.ClauseElement, dialect: Dialect) -> tuple[str, list[Any]]:
    """A statement holding its own values, compiled with them (``IN`` lists expanded)."""
    compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
    state = compiled.construct_expanded_state()
    names = list(state.positiontup or ())
    # the expanded state holds only the processors of expanded (IN) binds: the others are
    # the compiled statement's own
    processors: dict[str, Any] = {**compiled._bind_processors, **state.processors}
    values = [
        processors[n](state.parameters[n]) if n in processors else state.parameters[n]
        for n in names
    ]
    return state.statement, values


# A plain INSERT's rows go in multi-row statements: executemany() steps once per row, and
# each step gives up the GIL and must take it back from a busy event loop (measured in the
# worker: 20-45 us per row against 5-10 us alone). Bounded by SQLite's 32766 variables.
_ONE_ROW = re.compile(r"\(\?(?:, \?)*\)")
MULTI_ROWS = 500
MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)  # UPDATE ... FROM


@functools.cache
def _unique_columns(table: sa.Table) -> frozenset[str]:
    """Columns under a UNIQUE constraint or index (not the primary key: rows are found by
    it, and it is not set)."""
    found: set[str] = set()
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            found.update(c.key for c in constraint.columns)
    for index in table.indexes:
        if index.unique:
            found.update(c.key for c in index.columns)
    return frozenset(found)


def run_step(conn: sqlite3.Connection, sql: str, rows: list[Row]) -> int:
    """``sql`` for each of ``rows``; the rows it changed in all."""
    head, values, group = sql.partition(" VALUES ")
    if (
        len(rows) < 2
        or not values
        or not head.startswith("INSERT INTO ")
        or not _ONE_ROW.fullmatch(group)
    ):
        return conn.executemany(sql, rows).rowcount
    per = max(1, min(MULTI_ROWS, MAX_VARIABLES // max(len(rows[0]), 1)))
    changed = 0
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        many = f"{head} VALUES {', '.join([group] * len(chunk))}"
        changed += conn.execute(many, list(itertools.chain.from_iterable(chunk))).rowcount
    return changed
