"""The submit path's checks, shared by HTTP and SMTP: pure, no I/O.

An ingress turns what it received into :class:`~postroute.messages.drafts.Draft` values
(fields checked one by one, problems found so far); :func:`plan` runs the checks of the
submit path against the account as last read (:class:`AccountState`: pools, domains,
defaults) and the suppression list as last read, and describes the rows to store
(:mod:`postroute.messages.rows`), guarded by the stamps of the pools and domains and by
the suppression entries of the recipients it was planned against. Every problem of
every draft is reported at once, in one ``DomainError``.

Each check of the path is one function here, in order: :func:`resolve_pool`,
:func:`sender_of`, :func:`check_sender_domain`, :func:`check_suppressed` (a suppressed
recipient is otherwise recorded ``dropped``, not refused). Later rules (a template to
render, ``send_at``) are one more function each, called from :func:`plan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postroute import errors
from postroute.db.changes import Changes
from postroute.domains import repository as domains_repo
from postroute.domains.names import from_domain
from postroute.messages.drafts import Draft, Fields, Problem, Recipient
from postroute.messages.rows import Switches, add_rows
from postroute.messages.schemas import SendResponse
from postroute.models import SmtpPool
from postroute.pools import repository as pools_repo
from postroute.pools.routing import choose
from postroute.suppressions import repository as suppressions_repo
from postroute.suppressions.rules import key

NO_DEFAULTS = Switches(track_opens=False, track_clicks=False, unsubscribe=False)
__all__ = ["AccountState", "Draft", "Fields", "Planned", "Problem", "Recipient", "plan"]


@dataclass(frozen=True)
class AccountState:
    """What the checks read of one account, as read at one time: its pools, whether it
    requires a verified From domain and which of its domains are, with their stamps
    (:func:`~postroute.pools.repository.pools_stamp`,
    :func:`~postroute.domains.repository.sending_stamp`): drafts are planned against them
    outside any write transaction, and the stamps tell at write time whether they hold."""

    account_id: str
    pools: list[SmtpPool]
    stamp: tuple[Any, ...]
    require_verified_domain: bool = False
    verified_domains: frozenset[str] = frozenset()
    domains_stamp: tuple[Any, ...] | None = None
    # the account's defaults for drafts that do not say
    defaults: Switches = NO_DEFAULTS


@dataclass(frozen=True)
class Planned:
    """Drafts of one account made into rows (:attr:`changes`) and replies."""

    account_id: str
    drafts: Sequence[Draft]
    batch: bool
    now: datetime
    stamps: tuple[Any, ...]  # of the pools and domains it was planned against
    changes: Changes
    replies: list[SendResponse]
    suppressed: Mapping[str, str]  # what it took the suppression list to say (key: reason)

    def recipients(self) -> set[str]:
        """The drafts' recipients, as the suppression list keys them."""
        return {key(r.email) for d in self.drafts for r in d.recipients}


def plan(
    account_id: str,
    drafts: Sequence[Draft],
    pools: AccountState,
    now: datetime,
    *,
    batch: bool,
    suppressed: Mapping[str, str] | None = None,
) -> Planned:
    """Check ``drafts`` (all or none: a batch) and describe their rows. A refused draft
    raises one DomainError with every problem of every draft in ``details``.
    ``suppressed``: the recipients the account suppresses (key: reason), as last read;
    None: assume none (the write's guard tells, and the drafts are planned again)."""
    known = suppressed or {}
    problems: list[Problem] = []
    ready: list[tuple[Draft, SmtpPool, str]] = []
    for i, draft in enumerate(drafts):
        found = list(draft.problems)
        pool = resolve_pool(draft, pools.pools, found)
        sender = sender_of(draft, pool, found)
        check_sender_domain(draft, sender, pools, found)
        check_suppressed(draft, known, found)
        if found or pool is None or sender is None:
            prefix = f"messages[{i}]." if batch else ""
            order = draft.fields.order
            found.sort(key=lambda p: order.index(p.field) if p.field in order else len(order))
            problems.extend(Problem(prefix + p.field, p.message, p.code) for p in found)
            continue
        ready.append((draft, pool, sender))
    if problems:
        codes = {p.code for p in problems}
        raise errors.DomainError(
            "; ".join(p.message for p in problems),
            code=codes.pop() if len(codes) == 1 else errors.VALIDATION_FAILED,
            details=[{"field": p.field, "message": p.message} for p in problems],
        )
    changes = Changes()
    pools_repo.guard_stamp(changes, account_id, pools.stamp)
    if pools.domains_stamp is not None:
        domains_repo.guard_sending(changes, account_id, pools.domains_stamp)
    replies = [
        add_rows(changes, account_id, d, p, s, now, switches(d, pools.defaults), known)
        for d, p, s in ready
    ]
    stamps = (pools.stamp, pools.domains_stamp)
    done = Planned(account_id, drafts, batch, now, stamps, changes, replies, known)
    suppressions_repo.guard_recipients(changes, account_id, done.recipients(), known, now)
    return done


def switches(draft: Draft, defaults: Switches) -> Switches:
    """Tracking and List-Unsubscribe: as the draft says, else the account's defaults."""
    return Switches(
        defaults.track_opens if draft.track_opens is None else draft.track_opens,
        defaults.track_clicks if draft.track_clicks is None else draft.track_clicks,
        defaults.unsubscribe if draft.unsubscribe is None else draft.unsubscribe,
    )


def resolve_pool(
    draft: Draft, pools: Sequence[SmtpPool], problems: list[Problem]
) -> SmtpPool | None:
    """The pool the draft names (id or name), else the default, else the first active by
    priority; None (and a problem) when there is none."""
    name = draft.fields.pool
    if draft.pool_ref is not None:
        for pool in pools:
            if draft.pool_ref in (pool.id, pool.name):
                return pool
        message = f"no SMTP pool with id or name {draft.pool_ref!r}"
        if draft.fields.pool_named:
            message = f"{name}: {message}"
        problems.append(Problem(name, message, errors.POOL_NOT_FOUND))
        return None
    route = choose(pools, None)
    if route is None:
        message = "no active SMTP pool: create one (POST /v1/smtp-pools, or postroute pools add)"
        problems.append(Problem(name, message, errors.NO_POOL_CONFIGURED))
        return None
    return next(p for p in pools if p.id == route.pool_id)


def sender_of(draft: Draft, pool: SmtpPool | None, problems: list[Problem]) -> str | None:
    """The From address: the message's, else the pool's ``from_email``."""
    if draft.sender is not None:
        return draft.sender
    if any(p.field == draft.fields.sender for p in problems):
        return None  # a From that did not parse: that problem is reported already
    if pool is not None and pool.from_email:
        return pool.from_email
    if pool is not None or draft.fields.sender_without_pool:
        problems.append(Problem(draft.fields.sender, draft.fields.no_sender))
    return None


def check_sender_domain(
    draft: Draft, sender: str | None, state: AccountState, problems: list[Problem]
) -> None:
    """When the account requires it, the From domain must be one of its verified domains
    (another account's does not count)."""
    if sender is None or not state.require_verified_domain:
        return
    domain = from_domain(sender)
    if domain not in state.verified_domains:
        message = (
            f"the From domain {domain} is not verified: add it (POST /v1/domains), publish "
            "its DNS records and verify it, or turn require_verified_domain off (PATCH "
            "/v1/account)"
        )
        problems.append(Problem(draft.fields.sender, message, errors.DOMAIN_NOT_VERIFIED))


def check_suppressed(draft: Draft, suppressed: Mapping[str, str], problems: list[Problem]) -> None:
    """A draft whose ingress refuses it when no recipient may be mailed (SMTP), and none
    may: one problem naming each address and why."""
    if not draft.fields.refuse_all_suppressed or not draft.recipients:
        return
    reasons = [suppressed.get(key(r.email)) for r in draft.recipients]
    if any(r is None for r in reasons):
        return
    pairs = zip(draft.recipients, reasons, strict=True)
    listed = ", ".join(f"{r.email} ({why})" for r, why in pairs)
    message = f"every recipient is on the suppression list: {listed}"
    problems.append(Problem("recipients", message, errors.RECIPIENT_SUPPRESSED))
