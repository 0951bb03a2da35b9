"""The per-content cache keeps each kind's last used keys, up to its own bound."""

from __future__ import annotations

from postroute.preparation.cache import Cache


def test_each_kind_keeps_its_last_used_keys() -> None:
    cache = Cache(size=2, sizes={"links": 1})
    made: list[str] = []

    def make(value: str) -> str:
        made.append(value)
        return value

    for key in ("a", "b", "a", "c", "a", "b"):  # "b" goes when "c" comes: "a" was used
        assert cache.get("dkim", key, lambda k=key: make(k)) == key
    assert made == ["a", "b", "c", "b"]
    cache.get("links", "a", lambda: make("la"))
    cache.get("links", "b", lambda: make("lb"))
    cache.get("links", "a", lambda: make("la"))
    assert made[4:] == ["la", "lb", "la"]
    cache.get("dkim", None, lambda: make("x"))
    cache.get("dkim", None, lambda: make("x"))
    assert made[7:] == ["x", "x"]  # no key: made each time
