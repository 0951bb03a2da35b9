"""A stored message made into what is relayed for one recipient: pure, no I/O.

:func:`prepare` is what the worker sends and what ``GET /v1/messages/{id}/raw``
shows. It puts the per-recipient headers in front of the content the recipients of a
submission share (stored once): ``Message-ID``, ``X-Postroute-Message-ID``,
``X-Postroute-Account-ID`` and, last, ``X-Postroute-Pool-ID``. The pool header is the
only part that depends on the pool, so a message that fails over to another pool gets
that one line swapped (:meth:`Prepared.for_pool`), not prepared again. Later steps
(List-Unsubscribe, tracking, DKIM last) belong here, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroute.preparation.headers import header_block, line_ending

POOL_HEADER = "X-Postroute-Pool-ID"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One recipient's message as stored."""

    message_id: str
    account_id: str
    message_id_header: str
    from_email: str
    to_email: str
    content: bytes  # shared by the submission's recipients


@dataclass(frozen=True, slots=True)
class Prepared:
    """What goes to the relay: the envelope sender and the message's bytes. ``pool`` is
    where the pool header's line sits in ``data`` (empty when there is none)."""

    mail_from: str
    data: bytes
    pool: slice

    def for_pool(self, pool_id: str) -> Prepared:
        """The same message for another pool: only its pool header changes."""
        linesep = line_ending(self.data)
        line = header_block([(POOL_HEADER, pool_id)], linesep)
        data = self.data[: self.pool.start] + line + self.data[self.pool.stop :]
        return Prepared(self.mail_from, data, slice(self.pool.start, self.pool.start + len(line)))


def prepare(outgoing: Outgoing, pool_id: str | None) -> Prepared:
    """The message relayed to ``outgoing.to_email`` through pool ``pool_id`` (None: as it
    would be, before a pool is chosen). The envelope sender is the From address."""
    linesep = line_ending(outgoing.content)
    head = header_block(
        [
            ("Message-ID", outgoing.message_id_header),
            ("X-Postroute-Message-ID", outgoing.message_id),
            ("X-Postroute-Account-ID", outgoing.account_id),
        ],
        linesep,
    )
    pool = header_block([(POOL_HEADER, pool_id)], linesep) if pool_id else b""
    data = head + pool + outgoing.content
    return Prepared(outgoing.from_email, data, slice(len(head), len(head) + len(pool)))
