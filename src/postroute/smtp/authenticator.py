"""Who is sending: the account of an API key given as the AUTH password (any user name),
or of an IP credential covering the client's address. Key checks go through the
process's :class:`~postroute.kit.guard.AuthGuard` (limits on guessing, shared with
the HTTP API)."""

from __future__ import annotations

import logging

from postroute.accounts import ip_credentials
from postroute.accounts import service as accounts
from postroute.accounts.service import AccountContext
from postroute.db import transaction
from postroute.runtime import Runtime

log = logging.getLogger("postroute.smtp")


class Authenticator:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def check_key(self, ip: str, password: bytes) -> AccountContext | None:
        """The account of the API key ``password``; None for a wrong or revoked key
        (counted against ``ip`` by the guard). Database trouble raises, and so does
        ``TooManyAttempts`` when too many checks from ``ip`` already wait."""
        try:
            token = password.decode("utf-8").strip()
        except UnicodeDecodeError:
            token = ""
        context = None
        if token:
            context = await self.rt.guard.check(ip, token, lambda: self._lookup(token))
        if context is None:
            log.info("SMTP AUTH failed from %s", ip)  # never the key itself
        return context

    async def _lookup(self, token: str) -> AccountContext | None:
        async with transaction(self.rt.sessions) as session:
            return await accounts.authenticate(session, token, self.rt.clock)

    async def account_for_ip(self, ip: str) -> str | None:
        """The account whose IP credential covers ``ip``, if any."""
        async with self.rt.sessions() as session:
            return await ip_credentials.account_for_ip(session, ip)
