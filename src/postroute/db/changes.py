"""A write transaction described once, run the same way on every backend.

Repositories describe each of their writes once, as statements added to a
:class:`Changes`: rows to insert, rows to update by key, a statement built once and
run for each of some rows, a statement holding its own values, and *guards*: reads that
must return exactly what the caller planned with, else nothing is written and
:class:`Stale` is raised (a pool changed since the send was validated, a lease was
taken over by another worker). :class:`~postroute.db.store.Store` runs it: on a SQLite
file in one hand-off to the writer thread (:mod:`postroute.db.sqlite`), otherwise in an
ordinary transaction (:func:`apply`). Guards are checked the same way on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db.bulk import fetch_all, insert_many, update_by_key

Row = dict[str, Any]
Statement = sa.Insert | sa.Update | sa.Delete | sa.TextClause


class Stale(Exception):
    """A guard of a :class:`Changes` did not hold: nothing of it was written."""


@dataclass(frozen=True)
class Guard:
    """``stmt`` must return exactly ``rows``: with ``params`` a statement built once with
    named bind parameters (rows as :func:`fetch_all` returns them), without a statement
    holding its own values (an ``IN`` list), rows as the driver returns them."""

    stmt: sa.Select[*tuple[Any, ...]]
    params: dict[str, Any] | None
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class Insert:
    table: sa.Table
    rows: list[Row]


@dataclass(frozen=True)
class UpdateByKey:
    """``UPDATE table SET <the row's other columns> WHERE key = row[key]`` per row."""

    table: sa.Table
    key: str
    rows: list[Row]


@dataclass(frozen=True)
class Execute:
    """A statement built once (named bind parameters), run for each row."""

    stmt: Statement
    rows: list[Row]


@dataclass(frozen=True)
class ExecuteOnce:
    """A statement holding its own values (compiled where it runs, not kept)."""

    stmt: Statement


Step = Insert | UpdateByKey | Execute | ExecuteOnce


@dataclass
class Changes:
    guards: list[Guard] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    # the insert step of each (table, columns): a submission adds five inserts per draft
    _inserts: dict[tuple[sa.Table, tuple[str, ...]], Insert] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __bool__(self) -> bool:
        return bool(self.guards or self.steps)

    def guard(
        self,
        stmt: sa.Select[*tuple[Any, ...]],
        rows: Sequence[tuple[Any, ...]],
        params: dict[str, Any] | None = None,
    ) -> None:
        self.guards.append(Guard(stmt, params, list(rows)))

    def insert(self, table: sa.Table, rows: Sequence[Row]) -> None:
        """Rows keyed by column name. Rows with the same keys as an earlier insert into
        the same table join it (one multi-row statement), keeping its place: parents
        first, as they were first added."""
        for row in rows:
            keys = tuple(row)
            step = self._inserts.get((table, keys))
            if step is None:
                step = self._inserts[(table, keys)] = Insert(table, [])
                self.steps.append(step)
            step.rows.append(row)

    def update(self, table: sa.Table, key: str, rows: Sequence[Row]) -> None:
        if rows:
            self.steps.append(UpdateByKey(table, key, list(rows)))

    def execute(self, stmt: Statement, rows: Sequence[Row]) -> None:
        if rows:
            self.steps.append(Execute(stmt, list(rows)))

    def execute_once(self, stmt: Statement) -> None:
        self.steps.append(ExecuteOnce(stmt))

    def extend(self, other: Changes) -> None:
        """``other``'s guards and steps after these (its inserts joining these')."""
        self.guards.extend(other.guards)
        for step in other.steps:
            if isinstance(step, Insert):
                self.insert(step.table, step.rows)
            else:
                self.steps.append(step)


async def apply(session: AsyncSession, changes: Changes) -> None:
    """Run ``changes`` in the session's transaction (the caller commits): guards first
    (:class:`Stale` if one does not hold; the caller's rollback then undoes the rest),
    then the steps in order. Core statements on the session's connection (no ORM
    bulk-by-primary-key semantics for a list of rows)."""
    conn = await session.connection()
    for guard in changes.guards:
        if guard.params is None:
            found = [tuple(r) for r in (await conn.execute(guard.stmt)).all()]
        else:
            found = await fetch_all(session, guard.stmt, guard.params)
        if found != guard.rows:
            raise Stale("a guarded read changed since it was planned")
    for step in changes.steps:
        if isinstance(step, Insert):
            await insert_many(session, step.table, step.rows)
        elif isinstance(step, UpdateByKey):
            await update_by_key(session, step.table, step.key, step.rows)
        elif isinstance(step, Execute):
            await conn.execute(step.stmt, step.rows)
        else:
            await conn.execute(step.stmt)
