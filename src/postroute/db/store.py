"""Where described writes (:class:`~postroute.db.changes.Changes`) go: chosen here, by
the backend, never by the caller.

On a SQLite file a write is one hand-off to the writer thread
(:class:`~postroute.db.sqlite.writer.SqliteWriter`): a :class:`Changes` is compiled to a
:class:`~postroute.db.sqlite.unit.Unit` (multi-row statements, values converted once),
preferably by :meth:`Store.prepare` before the write lock is taken. Anywhere else (and
for an in-memory SQLite database) it runs in an ordinary transaction with
:func:`~postroute.db.changes.apply`. Both check the guards the same way and raise
:class:`~postroute.db.changes.Stale` when one does not hold, having written nothing.

A commit is acknowledged in two steps: :meth:`Store.commit` (its transaction committed)
and :meth:`Store.sync` (on disk: on SQLite the WAL is fsync'd outside the write lock, so
the next transaction need not wait for the disk; elsewhere the commit was durable
already). :meth:`Store.write` does both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.engine import Dialect

from postroute.db.changes import Changes, apply
from postroute.db.engine import SessionFactory, transaction
from postroute.db.sqlite.unit import Unit
from postroute.db.sqlite.writer import SqliteWriter

Prepared = Changes | Unit  # a write ready for this store (see Store.prepare)
Build = Callable[[], Sequence[Prepared]]


class Store:
    def __init__(
        self, sessions: Callable[[], SessionFactory], writer: SqliteWriter | None, dialect: Dialect
    ) -> None:
        self._sessions = sessions  # asked per write: the runtime's current factory
        self._writer = writer
        self._dialect = dialect

    def prepare(self, changes: Changes) -> Prepared:
        """``changes`` in the form this store writes: on SQLite compiled now (statements and
        converted values), so that the writer's thread does not do it under the lock."""
        if self._writer is None:
            return changes
        return Unit.of(changes, self._dialect)

    async def write(self, changes: Changes) -> None:
        """Commit ``changes`` and return once it is on disk (:class:`Stale`: nothing
        written)."""
        prepared = self.prepare(changes)
        ticket = await self.commit(lambda: [prepared])
        if ticket is not None:
            await self.sync(ticket)

    async def commit(self, build: Build) -> int | None:
        """Begin (waiting for SQLite's write lock), call ``build`` in the transaction (what
        is ready by then goes in), check the guards, write, commit. A ticket for
        :meth:`sync`; None when ``build`` gave nothing. ``build`` runs in the writer's
        thread on SQLite: it must only take what is ready and put it together."""
        if self._writer is not None:
            return await self._writer.commit(lambda: self._unit(build()))
        async with transaction(self._sessions()) as session:
            await session.connection()  # BEGIN first: build() takes what arrived meanwhile
            parts = build()
            if not parts:
                return None
            merged = Changes()
            for part in parts:
                assert isinstance(part, Changes), "prepared by this store"
                merged.extend(part)
            await apply(session, merged)
        return 0

    async def sync(self, ticket: int) -> None:
        """Return once commit ``ticket`` is on disk (``OSError`` if an fsync failed)."""
        if self._writer is not None:
            await self._writer.sync(ticket)

    def _unit(self, parts: Sequence[Prepared]) -> Unit | None:
        if not parts:
            return None
        units = [p if isinstance(p, Unit) else Unit.of(p, self._dialect) for p in parts]
        return units[0] if len(units) == 1 else Unit.merged(self._dialect, units)
