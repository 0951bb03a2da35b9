"""Text ordered the same on every backend: by code point (``COLLATE "C"`` on
PostgreSQL, whose default collation follows the locale; SQLite's default, BINARY,
compares UTF-8 bytes, which is code point order). A guard that compares rows read in
SQL with rows a Python ``sorted()`` made needs this."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


class binary(ColumnElement[str]):  # lower case: reads as a function in a query
    inherit_cache = True
    type = sa.String()
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: sa.ColumnExpressionArgument[str]) -> None:
        self.column = sa.sql.coercions.expect(sa.sql.roles.ExpressionElementRole, column)


@compiles(binary)
def _default(element: binary, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(binary, "postgresql")
def _postgresql(element: binary, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.column, **kw)} COLLATE "C"'
