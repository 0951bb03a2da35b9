"""The periodic recheck of verified domains, run beside each delivery worker: a domain
whose next check is due is taken (so that one worker checks it), its records looked up
(outside any transaction) and the results written; a required record gone makes it
``failing`` (with a ``domain.failing`` event)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from postroute.db.engine import begin_read, transaction
from postroute.domains import repository as repo
from postroute.domains import service, verification
from postroute.domains.dns import Checker
from postroute.models import Domain
from postroute.runtime import Runtime

log = logging.getLogger("postroute.domains")
POLL_SECONDS = 60.0  # how often a worker looks for domains due for their recheck
TAKEN_FOR = timedelta(minutes=15)  # a taken domain is due again after this if not written
BATCH = 20


async def recheck_due(rt: Runtime) -> int:
    """Recheck the domains due now; how many were checked."""
    s = rt.settings
    now = rt.clock.now()
    async with transaction(rt.sessions) as session:
        due = await repo.claim_due(session, now, now + TAKEN_FOR, BATCH)
    checker = Checker(s.resolver_list, s.dns_timeout_seconds)
    hosts = service.Hosts.of(s.bounce_host, s.public_url)
    for domain_id in due:
        async with transaction(rt.sessions) as session:
            await begin_read(session)
            domain = await session.get(Domain, domain_id)
            if domain is None:
                continue
            before = await service.view(session, domain)
        found = await verification.check(checker, before.records)
        async with transaction(rt.sessions) as session:
            domain = await session.get(Domain, domain_id)
            if domain is None:
                continue
            current = await service.view(session, domain)
            recheck = timedelta(hours=s.domain_recheck_hours)
            await verification.apply_results(
                session, current, found, hosts, rt.clock.now(), recheck
            )
    return len(due)


class Rechecker:
    def __init__(self, runtime: Runtime, poll: float = POLL_SECONDS) -> None:
        self.rt = runtime
        self.poll = poll

    async def run(self) -> None:
        """Until cancelled: every ``poll`` seconds, the domains due."""
        while True:
            try:
                await recheck_due(self.rt)
            except Exception:
                log.exception("rechecking domains failed; trying again later")
            await asyncio.sleep(self.poll)

    @staticmethod
    async def stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
