"""The one submit path for HTTP and SMTP: plan drafts against the account's pools (as
last read), store them, answer ids.

    submitter.submit(account_id, drafts)            # HTTP: plan, then store
    planned = await submitter.plan(account_id, [draft])
    await submitter.store([planned, ...])           # SMTP: its group commit batches plans

Planning happens before any write lock (SQLite has one writer). The pools are kept per
account with their stamp; the write is guarded by that stamp, so a pool changed since
(by any process) makes the write :class:`~postroute.db.changes.Stale`: the drafts
concerned are planned again against the pools read then, and may be refused.

The suppression list is not read to plan: a plan assumes its recipients are not
suppressed, and the write's guard (one indexed read of those addresses, in the write)
checks it. A recipient found suppressed makes the write stale; the plan is made again
with what the list says, and that recipient's message is recorded ``dropped``. Mail to
suppressed addresses is rare, so the common send reads nothing before its write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from postroute import errors
from postroute.db.changes import Changes, Stale
from postroute.db.engine import begin_read, transaction
from postroute.db.store import Prepared
from postroute.domains import repository as domains_repo
from postroute.messages.planning import AccountState, Draft, Planned, plan
from postroute.messages.rows import Switches
from postroute.messages.schemas import SendResponse
from postroute.models.domains import FAILING, VERIFIED
from postroute.pools import repository as pools_repo
from postroute.runtime import Runtime
from postroute.suppressions import repository as suppressions_repo

SENDING = (VERIFIED, FAILING)  # a failing domain still sends (and signs): fix its DNS
Result = list[SendResponse] | errors.DomainError
Extra = Callable[[Sequence[Planned]], Changes]  # more rows, made from what is written


class Submitter:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._pools: dict[str, AccountState] = {}

    async def submit(
        self,
        account_id: str,
        drafts: Sequence[Draft],
        *,
        batch: bool = False,
        extra: Extra | None = None,
    ) -> list[SendResponse]:
        """Plan ``drafts`` (all or none) and store them with ``extra`` (e.g. the
        idempotency key's row, made from the replies) in one write; their replies."""
        planned = await self.plan(account_id, drafts, batch=batch)
        (result,) = await self.store([planned], extra)
        if isinstance(result, errors.DomainError):
            raise result
        return result

    async def plan(self, account_id: str, drafts: Sequence[Draft], *, batch: bool) -> Planned:
        """``drafts`` checked and made into rows against the account's pools as last read;
        refused by those, against the pools read now (one created a moment ago, perhaps
        by another process, must not be refused)."""
        known = self._pools.get(account_id)
        pools = known or await self.pools(account_id)
        now = self.rt.clock.now()
        try:
            return plan(account_id, drafts, pools, now, batch=batch)
        except errors.DomainError:
            if known is None:
                raise
        return plan(account_id, drafts, await self.pools(account_id), now, batch=batch)

    def prepare(self, planned: Planned) -> Prepared:
        """``planned``'s rows in the form the store writes (compiled now on SQLite, before
        the write lock)."""
        return self.rt.store.prepare(planned.changes)

    async def store(self, planned: Sequence[Planned], extra: Extra | None = None) -> list[Result]:
        """``planned`` (and ``extra`` of what is written) in one write; per item its
        replies, or the DomainError refusing it when its pools changed meanwhile and
        refuse it now."""
        results: list[Result | None] = [None] * len(planned)
        todo = list(enumerate(planned))
        while todo:
            parts = [self.prepare(p) for _, p in todo]
            if extra is not None:
                parts.append(self.rt.store.prepare(extra([p for _, p in todo])))
            try:
                ticket = await self.rt.store.commit(_given(parts))
            except Stale:
                again = await self.refresh([p for _, p in todo])
                for (i, _), item in zip(todo, again, strict=True):
                    if isinstance(item, errors.DomainError):
                        results[i] = item
                todo = [
                    (i, p) for (i, _), p in zip(todo, again, strict=True) if isinstance(p, Planned)
                ]
                continue
            if ticket is not None:
                await self.rt.store.sync(ticket)
            for i, item in todo:
                results[i] = item.replies
            todo = []
        return [r if r is not None else [] for r in results]

    async def refresh(self, planned: Sequence[Planned]) -> list[Planned | errors.DomainError]:
        """After a stale write: each item as planned against its account's pools read now
        (once per account); the same item where those still hold, a DomainError where
        they refuse it."""
        fresh: dict[str, AccountState] = {}
        listed = await self.suppressed(planned)
        out: list[Planned | errors.DomainError] = []
        for item in planned:
            if item.account_id not in fresh:
                fresh[item.account_id] = await self.pools(item.account_id)
            pools = fresh[item.account_id]
            suppressed = active_at(listed[item.account_id], item)
            if (pools.stamp, pools.domains_stamp) == item.stamps and suppressed == dict(
                item.suppressed
            ):
                out.append(item)  # its reads held: another item's did not
                continue
            try:
                again = plan(
                    item.account_id,
                    item.drafts,
                    pools,
                    item.now,
                    batch=item.batch,
                    suppressed=suppressed,
                )
            except errors.DomainError as exc:
                out.append(exc)
            else:
                out.append(again)
        return out

    async def suppressed(
        self, planned: Sequence[Planned]
    ) -> dict[str, dict[str, tuple[str, datetime | None]]]:
        """Per account, the entries of its items' recipients that were active at the
        earliest of those items' times (reason and expiry): one read per account, each
        item then keeps those active at its own time (:func:`active_at`)."""
        wanted: dict[str, tuple[set[str], datetime]] = {}
        for item in planned:
            emails, since = wanted.get(item.account_id, (set(), item.now))
            emails.update(item.recipients())
            wanted[item.account_id] = (emails, min(since, item.now))
        async with transaction(self.rt.sessions) as session:
            await begin_read(session)
            return {
                account_id: await suppressions_repo.entries_for(session, account_id, emails, since)
                for account_id, (emails, since) in wanted.items()
            }

    def known(self, account_id: str) -> AccountState | None:
        """The account's pools as last read, if they were."""
        return self._pools.get(account_id)

    async def pools(self, account_id: str) -> AccountState:
        """The account's pools and domains read now (and kept for the next plans)."""
        async with transaction(self.rt.sessions) as session:
            await begin_read(session)
            # The stamps first: if a pool changes in between, the pools are newer than
            # their stamp, and the write's guard plans again (never the other way round).
            stamp = await pools_repo.pools_stamp(session, account_id)
            domains_stamp = await domains_repo.sending_stamp(session, account_id)
            pools = list(await pools_repo.list_pools(session, account_id))
            account = await domains_repo.account_flags(session, account_id)
            domains = await domains_repo.list_domains(session, account_id)
        defaults = Switches(
            track_opens=bool(account and account.track_opens),
            track_clicks=bool(account and account.track_clicks),
            unsubscribe=bool(account and account.unsubscribe_header),
        )
        found = self._pools[account_id] = AccountState(
            account_id,
            pools,
            stamp,
            require_verified_domain=bool(account and account.require_verified_domain),
            verified_domains=frozenset(d.name for d in domains if d.status in SENDING),
            domains_stamp=domains_stamp,
            defaults=defaults,
        )
        return found


def _given(parts: list[Prepared]) -> Callable[[], list[Prepared]]:
    return lambda: parts


def active_at(entries: dict[str, tuple[str, datetime | None]], item: Planned) -> dict[str, str]:
    """Of ``entries`` (address -> reason, expiry), those of ``item``'s recipients active at
    its time (as its write's guard reads them), with their reason."""
    return {
        email: reason
        for email in item.recipients()
        if email in entries
        for reason, expires in [entries[email]]
        if expires is None or expires > item.now
    }
