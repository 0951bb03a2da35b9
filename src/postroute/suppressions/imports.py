"""Reading a CSV of addresses to suppress, all checked before anything is written.

The file is UTF-8 (a byte-order mark is fine). With a header row naming an ``email``
column (any case; ``address`` and ``email_address`` too), that column is the address and
an optional ``reason`` column says why (``hard_bounce``, ``complaint``, ``unsubscribe``,
``manual``; empty: ``manual``); without one, the first column of each row is the
address. Blank lines are skipped; an address given twice counts once (the last row
wins). Every bad row is reported with its line number, and then nothing is imported.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from pydantic_core import PydanticCustomError

from postroute.kit.text import email_address
from postroute.suppressions.rules import MANUAL, REASONS, SOURCE_IMPORT, key

_EMAIL_COLUMNS = ("email", "address", "email_address")
MAX_PROBLEMS = 20  # reported; the count says how many more


@dataclass
class Parsed:
    rows: list[dict[str, str]] = field(default_factory=list)  # email, reason, source
    problems: list[str] = field(default_factory=list)
    bad_rows: int = 0

    def problem(self, line: int, message: str) -> None:
        self.bad_rows += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"line {line}: {message}")


def parse(data: bytes) -> Parsed:
    """The rows of a CSV file's bytes, or the problems that refuse it."""
    out = Parsed()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        out.problem(text_line(data, exc.start), "not UTF-8")
        return out
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        out.problem(0, f"not CSV: {exc}")
        return out
    email_at, reason_at, first = 0, None, 0
    if table:
        header = [c.strip().lower() for c in table[0]]
        named = [c for c in _EMAIL_COLUMNS if c in header]
        if named:
            email_at = header.index(named[0])
            reason_at = header.index("reason") if "reason" in header else None
            first = 1
    found: dict[str, dict[str, str]] = {}
    for number, row in enumerate(table[first:], start=first + 1):
        if not any(c.strip() for c in row):
            continue
        raw = row[email_at].strip() if email_at < len(row) else ""
        try:
            email = email_address(raw)
        except PydanticCustomError as exc:
            out.problem(number, f"{raw!r}: {exc.message()}")
            continue
        reason = row[reason_at].strip() if reason_at is not None and reason_at < len(row) else ""
        reason = reason or MANUAL
        if reason not in REASONS:
            out.problem(number, f"reason {reason!r}: must be one of {', '.join(REASONS)}")
            continue
        found[key(email)] = {"email": email, "reason": reason, "source": SOURCE_IMPORT}
    out.rows = list(found.values())
    return out


def text_line(data: bytes, offset: int) -> int:
    """The line number of byte ``offset``."""
    return data.count(b"\n", 0, offset) + 1
