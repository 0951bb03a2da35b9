"""What preparation computes once per content and keeps: a bounded map per kind of
result (DKIM's body hash and header fields, an HTML part's links), the ``size`` contents
seen last of each kind. One :class:`Cache` serves a whole worker."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")


# Kinds kept for fewer contents: an HTML part's pieces weigh about what the part does.
SIZES = {"links": 256}


class Cache:
    """Per-content results by kind, each kind keeping the ``size`` keys used last (or
    its own number, :data:`SIZES`)."""

    def __init__(self, size: int = 1024, sizes: dict[str, int] | None = None) -> None:
        self._size = size
        self._sizes = {**SIZES, **(sizes or {})}
        self._kinds: dict[str, OrderedDict[str, object]] = {}

    def get(self, kind: str, key: str | None, make: Callable[[], T]) -> T:
        """The ``kind`` result kept for ``key``, else ``make()`` (kept; None: not kept)."""
        if key is None:
            return make()
        found = self._kinds.setdefault(kind, OrderedDict())
        if key in found:
            found.move_to_end(key)
            return cast(T, found[key])
        value = found[key] = make()
        if len(found) > self._sizes.get(kind, self._size):
            found.popitem(last=False)
        return value
