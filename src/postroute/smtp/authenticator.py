"""Who is sending: the account of an API key given as the AUTH password (any user name),
or of an IP credential covering the client's address. Failed keys count per client IP."""

from __future__ import annotations

import logging

from postroute.accounts import ip_credentials
from postroute.accounts import service as accounts
from postroute.accounts.service import AccountContext
from postroute.api.runtime import Runtime
from postroute.db import transaction
from postroute.smtp.limits import SlidingWindow

log = logging.getLogger("postroute.smtp")


class Authenticator:
    def __init__(self, runtime: Runtime, failures: SlidingWindow) -> None:
        self.rt = runtime
        self.failures = failures

    def blocked(self, ip: str) -> bool:
        """Too many failed AUTH attempts from ``ip`` in the window: refuse without checking."""
        return self.failures.full(ip)

    async def check_key(self, ip: str, password: bytes) -> AccountContext | None:
        """The account of the API key ``password``; None (and one failure counted against
        ``ip``) for a wrong or revoked key. Database trouble raises."""
        try:
            token = password.decode("utf-8").strip()
        except UnicodeDecodeError:
            token = ""
        context = None
        if token:
            async with transaction(self.rt.sessions) as session:
                context = await accounts.authenticate(session, token, self.rt.clock)
        if context is None:
            self.failures.record(ip)
            log.info("SMTP AUTH failed from %s", ip)  # never the key itself
        return context

    async def account_for_ip(self, ip: str) -> str | None:
        """The account whose IP credential covers ``ip``, if any."""
        async with self.rt.sessions() as session:
            return await ip_credentials.account_for_ip(session, ip)
