"""A claimed message while this worker holds it: what it needs to be sent, where it may
go, what it is prepared as, and what happened to each try."""

from __future__ import annotations

from dataclasses import dataclass, field

from postroute.delivery.repository import Claimed, Envelope
from postroute.delivery.senders import Report
from postroute.preparation import Links, Outgoing, Prepared, Signing


@dataclass
class InFlight:
    claimed: Claimed
    envelope: Envelope
    content: bytes
    candidates: list[str]  # pool ids, in the order to try them
    route_note: str | None = None
    reports: list[Report] = field(default_factory=list)
    signing: Signing | None = None  # a verified domain's: DKIM keys, VERP envelope sender
    links: Links | None = None  # where its tracked URLs point (None: not tracked)
    prepared: Prepared | None = None  # once prepared for a pool (failover swaps the pool)

    @property
    def outgoing(self) -> Outgoing:
        e = self.envelope
        return Outgoing(
            e.message_id,
            e.account_id,
            e.message_id_header,
            e.from_email,
            e.to_email,
            self.content,
            e.content_id,
            e.mail_from,
            e.track_opens,
            e.track_clicks,
            e.unsubscribe,
        )

    def untried(self) -> list[str]:
        tried = {r.job.pool_id for r in self.reports}
        return [p for p in self.candidates if p not in tried]
