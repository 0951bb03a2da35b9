"""Declarative base and column types shared by every table."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class _SQLiteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME, same text (``2026-11-21 09:30:00.000000``), written and read by
    the C ``isoformat`` / ``fromisoformat`` rather than a %-format of a dict and a regex:
    several times cheaper, and a queue row has several timestamps."""

    def bind_processor(self, dialect: Dialect) -> Any:
        def process(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value)

        return process


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Always aware UTC in Python; naive UTC on SQLite (which sorts it as text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteDateTime())  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(self.impl_instance)

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":  # one call per value instead of two, and no copies
            return _sqlite_text
        return super().bind_processor(dialect)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_text(value: datetime | None) -> str | None:
    """``process_bind_param`` and ``_SQLiteDateTime``'s bind step in one: naive UTC text."""
    if value is None:
        return None
    if value.tzinfo is None or value.tzinfo is UTC:
        return _utc_text(value)
    # Another zone: not cached, as two times that differ only in ``fold`` compare equal.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@lru_cache(maxsize=256)  # the rows of one request or one batch share their timestamps
def _utc_text(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime()}


def table_of(model: type[Base]) -> sa.Table:
    """The Core table of a mapped class, for ``executemany`` without the ORM's bulk path."""
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table
