"""A stored message made into what is relayed for one recipient: pure, no I/O.

:func:`prepare` is what the worker sends and what ``GET /v1/messages/{id}/raw``
shows. In order: the per-recipient headers go in front of the content the recipients of
a submission share (stored once): ``Message-ID``, ``X-Postroute-Message-ID``,
``X-Postroute-Account-ID``, ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` (when the
message asks for them, :mod:`.unsubscribe`) and, last, ``X-Postroute-Pool-ID``; the HTML
parts get their links and open pixel (:mod:`.tracking`); then, for a message from a
verified domain (:class:`Signing`), the DKIM signatures go on top (last: they cover what
the earlier steps wrote) and the envelope sender is the domain's VERP address. The pool
header is the only part that depends on the pool, and it is not signed: a message that
fails over to another pool gets that one line swapped (:meth:`Prepared.for_pool`), not
prepared again.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroute.preparation import dkim, tracking, unsubscribe
from postroute.preparation.cache import Cache
from postroute.preparation.headers import header_block, line_ending
from postroute.preparation.tracking import Links

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
    content_id: str | None = None  # its id: what is computed once per content is kept
    mail_from: str | None = None  # the envelope sender an SMTP client gave ("" for <>)
    track_opens: bool = False  # an open pixel in the HTML parts
    track_clicks: bool = False  # the HTML parts' http(s) links through the tracking host
    unsubscribe: bool = False  # List-Unsubscribe and List-Unsubscribe-Post


@dataclass(frozen=True, slots=True)
class Signing:
    """How a message from a verified domain leaves: the return path (VERP) address as
    its envelope sender, and the domain's active DKIM keys."""

    mail_from: str
    keys: tuple[dkim.DkimKey, ...]


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


def prepare(
    outgoing: Outgoing,
    pool_id: str | None,
    signing: Signing | None = None,
    cache: Cache | None = None,
    links: Links | None = None,
) -> Prepared:
    """The message relayed to ``outgoing.to_email`` through pool ``pool_id`` (None: as it
    would be, before a pool is chosen). The envelope sender: the VERP address of a signed
    message, else the client's own (SMTP), else the From address. ``cache`` keeps what
    is the same for every recipient of a content. ``links``: where tracked URLs point;
    without it nothing is tracked and no List-Unsubscribe is added."""
    cache = cache if cache is not None else Cache()
    linesep = line_ending(outgoing.content)
    fields = [
        ("Message-ID", outgoing.message_id_header),
        ("X-Postroute-Message-ID", outgoing.message_id),
        ("X-Postroute-Account-ID", outgoing.account_id),
    ]
    content, key, own_body = outgoing.content, outgoing.content_id, False
    if links is not None:
        if outgoing.unsubscribe:
            fields += unsubscribe.headers(content, key, outgoing.message_id, links, cache)
        tracked = tracking.track(
            content,
            key,
            outgoing.message_id,
            links,
            opens=outgoing.track_opens,
            clicks=outgoing.track_clicks,
            cache=cache,
        )
        if tracked is not None:  # a body of its own: its hash is not kept for others
            content, own_body = tracked, True
    head = header_block(fields, linesep)
    pool = header_block([(POOL_HEADER, pool_id)], linesep) if pool_id else b""
    if signing is not None:
        mail_from = signing.mail_from
        signature = dkim.sign(
            signing.keys, head, content, content_key=key, cache=cache, own_body=own_body
        )
        head = signature + head
    elif outgoing.mail_from is not None:
        mail_from = outgoing.mail_from
    else:
        mail_from = outgoing.from_email
    data = head + pool + content
    return Prepared(mail_from, data, slice(len(head), len(head) + len(pool)))
