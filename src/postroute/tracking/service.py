"""What the tracking endpoints call (no HTTP here): check a token, journal the hit, and
the one-click unsubscribe.

Opens and clicks read no database: the token is checked by its HMAC, the hit goes to
the journal and the call returns once the journal has it on disk; the recorder turns
it into an event later. The unsubscribe POST is rare and is written before it answers.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

from postroute import datadir, errors
from postroute.db import begin_read
from postroute.db.changes import Changes, Stale
from postroute.events import names
from postroute.events.record import Event, record
from postroute.preparation.tokens import BadToken, Tokens
from postroute.runtime import Runtime
from postroute.suppressions import repository as suppressions
from postroute.suppressions import rules as suppression_rules
from postroute.tracking import repository
from postroute.tracking.hits import CLICK, MAX_IP, MAX_USER_AGENT, OPEN, encode, new_hit
from postroute.tracking.recorder import Recorder

log = logging.getLogger("postroute.tracking")

JOURNAL_DIR = datadir.TRACKING_DIR  # in the data dir
_UNSAFE = re.compile(r"[^\x21-\x7e]")  # what a Location header cannot carry as it is
_TAB_OR_NEWLINE = re.compile(r"[\t\r\n]")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))


class UnknownToken(errors.NotFound):
    """Not a token of this deployment, or not one for this kind of link."""

    def __init__(self) -> None:
        super().__init__("unknown tracking link")


def redirect_target(url: str) -> str | None:
    """The Location of a click: ``url`` as a browser would take it from an ``href``
    (surrounding spaces dropped, tabs and newlines removed), every other byte outside
    printable ASCII percent-encoded; None unless it is an absolute http(s) URL."""
    cleaned = _TAB_OR_NEWLINE.sub("", url.strip(_C0_AND_SPACE))
    target = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), cleaned)
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return target


class Tracking:
    def __init__(self, runtime: Runtime, tokens: Tokens, recorder: Recorder) -> None:
        self.runtime = runtime
        self.tokens = tokens
        self.recorder = recorder

    @classmethod
    def build(cls, runtime: Runtime, directory: Path | None = None) -> Tracking:
        settings = runtime.settings
        tokens = Tokens(settings.secret_keys)
        return cls(runtime, tokens, Recorder(runtime, directory or settings.data_dir / JOURNAL_DIR))

    async def start(self) -> None:
        await self.recorder.start()

    async def stop(self) -> None:
        await self.recorder.stop()

    async def opened(self, token: str, method: str, user_agent: str, ip: str) -> None:
        """Journal an open (returns once on disk); :class:`UnknownToken` for a bad token."""
        try:
            message_id = self.tokens.read_open(token)
        except BadToken:
            raise UnknownToken() from None
        hit = new_hit(OPEN, message_id, self.runtime.clock.now(), method, user_agent, ip)
        await self._journal(encode(hit))

    async def clicked(self, token: str, method: str, user_agent: str, ip: str) -> str:
        """Journal a click; the URL to redirect to. :class:`UnknownToken` for a bad token
        or a URL that is not http(s)."""
        try:
            click = self.tokens.read_click(token)
        except BadToken:
            raise UnknownToken() from None
        target = redirect_target(click.url)
        if target is None:
            raise UnknownToken()
        at = self.runtime.clock.now()
        hit = new_hit(CLICK, click.message_id, at, method, user_agent, ip, click.index, click.url)
        await self._journal(encode(hit))
        return target

    async def _journal(self, line: bytes) -> None:
        """The hit is on disk when this returns. A journal that cannot be written (disk
        full) loses the hit, not the reader's click: logged, and the answer goes out."""
        try:
            await self.recorder.journal.append(line)
        except Exception as exc:
            log.error("tracking: a hit was not recorded: %s", exc)

    def unsubscribe_message(self, token: str) -> str:
        """The message of an unsubscribe token (no database read)."""
        try:
            return self.tokens.read_unsubscribe(token)
        except BadToken:
            raise UnknownToken() from None

    async def unsubscribe(self, token: str, user_agent: str, ip: str) -> bool:
        """Suppress the message's recipient for its account; the first time for this
        message, also an `unsubscribed` event. True when this call recorded the event.
        Written before it returns."""
        message_id = self.unsubscribe_message(token)
        async with self.runtime.sessions() as session:
            await begin_read(session)
            found = await repository.recipient_of(session, message_id)
            done = found is not None and await repository.is_unsubscribed(session, message_id)
        if found is None:
            raise errors.NotFound("this message no longer exists")
        account_id, email = found
        now = self.runtime.clock.now()
        # keyed as the list keys addresses (the domain in lower case), never expiring
        entry = suppression_rules.entry(
            account_id, email, suppression_rules.UNSUBSCRIBE, message_id, now
        )
        if not done:
            changes = Changes()
            repository.guard_once(changes, message_id)
            agent, address = user_agent[:MAX_USER_AGENT], ip[:MAX_IP]
            data = {"method": "one_click", "user_agent": agent, "ip": address}
            record(changes, [Event(names.UNSUBSCRIBED, account_id, message_id, now, data)])
            suppressions.upsert(changes, [entry])
            try:
                await self.runtime.store.write(changes)
                return True
            except Stale:  # another request unsubscribed it meanwhile
                pass
        again = Changes()  # the entry may have been removed since: add it back
        suppressions.upsert(again, [entry])
        await self.runtime.store.write(again)
        return False
