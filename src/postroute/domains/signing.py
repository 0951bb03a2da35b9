"""How mail from an account's domains leaves: a verified domain's messages are signed
with its active DKIM keys and carry a VERP envelope sender on its return-path domain;
a verified domain whose return path is not verified cannot send (its bounces would go
nowhere Postroute hears of); any other domain leaves as it came (unsigned, the client's
envelope sender or the From address).

Tracked links and List-Unsubscribe URLs point to the domain's tracking host once its
CNAME is verified (``https://track.example.com``, the scheme of ``POSTROUTE_PUBLIC_URL``),
else to ``POSTROUTE_PUBLIC_URL``; the unsubscribe mailto is on the verified return-path
domain (none without one)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from postroute.config import Settings
from postroute.domains import keys as dkim_keys
from postroute.domains import repository as repo
from postroute.kit.crypto import SecretBox
from postroute.models.domains import ACTIVE, FAILING, VERIFIED
from postroute.preparation import Links, Signing, Tokens
from postroute.preparation.dkim import DkimKey, PrivateKey

RETURN_PATH_LOCAL = "bounces"


@dataclass(frozen=True)
class SendingDomain:
    name: str
    return_path: str | None  # the return-path domain, when its records are verified
    keys: tuple[DkimKey, ...]
    tracking_host: str | None = None  # the tracking CNAME, when verified


class NoReturnPath(Exception):
    """The From domain is verified, its return path is not: the message is dropped."""


class SigningBook:
    """An account's sending domains with their keys loaded (decrypted once per key).
    With ``settings``, also where each domain's tracked URLs point (:meth:`links`; one
    :class:`Tokens` from the secret keys); without, nothing is tracked."""

    def __init__(self, box: SecretBox, settings: Settings) -> None:
        self._box = box
        self._loaded: dict[str, PrivateKey] = {}
        self.by_account: dict[str, dict[str, SendingDomain]] = {}
        self._stamps: dict[str, tuple[object, ...]] = {}  # what by_account was made of
        self._links: dict[tuple[str, str], Links] = {}  # made again after each refresh
        base = settings.public_url.rstrip("/")
        self._scheme = urlsplit(base).scheme or "https"
        self._public = Links(base, Tokens(settings.secret_keys))

    async def refresh(self, session: AsyncSession, account_ids: Iterable[str]) -> None:
        """The accounts' domains and keys as they are now: one read each (their stamp),
        and the domains and keys read again only when it changed."""
        for account_id in set(account_ids):
            stamp = await repo.signing_stamp(session, account_id)
            if self._stamps.get(account_id) == stamp:  # set with by_account, after it
                continue
            self._links.clear()
            domains = [
                d
                for d in await repo.list_domains(session, account_id)
                if d.status in (VERIFIED, FAILING)
            ]
            found = await repo.keys_of(session, [d.id for d in domains])
            mine: dict[str, SendingDomain] = {}
            for d in domains:
                signing = tuple(
                    DkimKey(d.name, k.selector, self._key(k.id, k.private_key_enc))
                    for k in found
                    if k.domain_id == d.id and k.state == ACTIVE
                )
                rp = f"{d.return_path_sub}.{d.name}" if d.return_path_verified else None
                track = (
                    f"{d.tracking_sub}.{d.name}" if d.tracking_sub and d.tracking_verified else None
                )
                mine[d.name] = SendingDomain(d.name, rp, signing, track)
            self.by_account[account_id] = mine
            self._stamps[account_id] = stamp  # (read first: a change since reads again)

    def _key(self, key_id: str, encrypted: str) -> PrivateKey:
        key = self._loaded.get(key_id)
        if key is None:
            key = self._loaded[key_id] = dkim_keys.load(self._box, encrypted)
        return key

    def signing(self, account_id: str, from_domain: str, message_id: str) -> Signing | None:
        """How the message leaves: signed with a VERP address, or None (as it came).
        :class:`NoReturnPath` when its domain is verified and its return path is not."""
        domain = self.by_account.get(account_id, {}).get(from_domain)
        if domain is None or not domain.keys:
            return None
        if domain.return_path is None:
            raise NoReturnPath(f"no verified return-path domain for {from_domain}")
        return Signing(f"{RETURN_PATH_LOCAL}+{message_id}@{domain.return_path}", domain.keys)

    def links(self, account_id: str, from_domain: str) -> Links:
        """Where the tracked URLs of a message from ``from_domain`` point."""
        domain = self.by_account.get(account_id, {}).get(from_domain)
        if domain is None or (domain.tracking_host is None and domain.return_path is None):
            return self._public
        found = self._links.get((account_id, from_domain))
        if found is None:
            p = self._public
            base = f"{self._scheme}://{domain.tracking_host}" if domain.tracking_host else p.base
            found = self._links[(account_id, from_domain)] = Links(
                base, p.tokens, domain.return_path
            )
        return found
