"""Every SMTP reply the submission server sends, in one table (as aiosmtpd's statuscodes).

Code and tests use the same constants. With ENHANCEDSTATUSCODES advertised, every
2xx/4xx/5xx reply carries an RFC 3463 status: :func:`rewrite` gives aiosmtpd's own
replies one (or replaces their text) on the way out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from postroute import errors


class Reply(NamedTuple):
    code: int
    status: str  # RFC 3463 enhanced status code
    text: str  # may hold {placeholders}: fill them by calling the reply

    def __call__(self, **values: Any) -> Reply:
        return self._replace(text=self.text.format(**values))

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @property
    def message(self) -> bytes:
        """The reply without its code, as smtplib and aiosmtplib report it."""
        return f"{self.status} {self.text}".encode()


S220_READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
S221_BYE = Reply(221, "2.0.0", "Bye")
S250_OK = Reply(250, "2.0.0", "OK")
S250_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
S250_RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
S250_QUEUED = Reply(250, "2.0.0", "Message queued as {id}")
S250_QUEUED_FOR = Reply(250, "2.0.0", "Message queued as {id} for <{to}>")
S250_SUPPRESSED_FOR = Reply(
    250, "2.0.0", "Not sent to <{to}>: on the suppression list ({reason}), recorded as {id}"
)
S250_BATCH = Reply(250, "2.0.0", "Batch {batch} of {count} messages queued")
S252_CANNOT_VRFY = Reply(
    252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery"
)
S421_TOO_MANY_CONNECTIONS = Reply(
    421, "4.7.0", "{host} Too many connections from your IP address, try again later"
)
S421_TOO_MANY_MESSAGES = Reply(
    421, "4.7.0", "{host} Too many messages on this connection, reconnect to send more"
)
S421_TIMEOUT = Reply(421, "4.4.2", "{host} Error: timeout exceeded, closing connection")
S421_SHUTDOWN = Reply(421, "4.3.2", "{host} Service shutting down, try again later")
S451_TRANSIENT = Reply(451, "4.3.0", "Temporary failure, please try again later")
S451_RATE_LIMITED = Reply(451, "4.7.1", "{reasons}")
S452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients (at most {max} per message)")
S454_AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
S500_LINE_TOO_LONG = Reply(500, "5.5.2", "Command line too long")
S530_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
S535_AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
S550_REJECTED = Reply(550, "5.7.1", "{reasons}")
S552_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size ({max} bytes)")
S553_BAD_RECIPIENT = Reply(553, "5.1.3", "Invalid recipient address: {reason}")
S553_BAD_SENDER = Reply(553, "5.1.7", "Invalid sender address: {reason}")

# aiosmtpd's own replies (text before the rewrite) that get another text, not just a status.
_AIOSMTPD_TEXT = {
    "220 Ready to start TLS": S220_READY_TLS,
    "221 Bye": S221_BYE,
    "250 OK": S250_OK,
    "252 Cannot VRFY user, but will accept message and attempt delivery": S252_CANNOT_VRFY,
    "500 Command line too long": S500_LINE_TOO_LONG,
}
_TOO_BIG_TEXTS = frozenset(
    {
        "552 Error: message size exceeds fixed maximum message size",
        "552 Error: Too much mail data",
    }
)
# Status for a 4xx/5xx reply of aiosmtpd that has none; else x.0.0 by class.
_DEFAULT_STATUS = {
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    552: "5.3.4",
    553: "5.1.3",
    555: "5.5.4",
}
_HAS_STATUS = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_NEEDS_STATUS = re.compile(r"(?P<code>[45]\d\d) (?P<text>.*)", re.DOTALL)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
MAX_LINE = 500  # reply lines stay under RFC 5321's 512 octets


def rewrite(text: str, *, max_size: int) -> str:
    """The outgoing form of a reply: ours unchanged, aiosmtpd's with a status code."""
    if "\r\n" in text or _HAS_STATUS.match(text):
        return text
    if text in _AIOSMTPD_TEXT:
        return str(_AIOSMTPD_TEXT[text])
    if text in _TOO_BIG_TEXTS:
        return str(S552_TOO_BIG(max=max_size))
    match = _NEEDS_STATUS.fullmatch(text)
    if match is None:  # greeting, EHLO lines, 334 and 354 prompts, HELP
        return text
    code = int(match["code"])
    status = _DEFAULT_STATUS.get(code, f"{code // 100}.0.0")
    return f"{code} {status} {match['text']}"


def clean(text: str) -> str:
    """Client-influenced text made safe for a reply line: printable ASCII only."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    return _UNPRINTABLE.sub("?", escaped)


def multiline(reply: Reply, parts: Sequence[str], sep: str = "; ") -> str:
    """``reply`` with ``parts`` joined by ``sep``; folded into continuation lines
    (``550-5.7.1 ...``) when one line would pass :data:`MAX_LINE`."""
    head = f"{reply.code}-{reply.status} "
    lines: list[str] = []
    current = ""
    for part in (clean(p) for p in parts):
        candidate = f"{current}{sep}{part}" if current else part
        if current and len(head) + len(candidate) > MAX_LINE:
            lines.append(current + sep.rstrip())
            current = part
        else:
            current = candidate
    lines.append(current)
    return _join(reply, lines)


def queued(ids: Sequence[tuple[str, str, str | None]], batch_id: str) -> str:
    """The 250 for an accepted message: ``Message queued as <id>`` for one recipient;
    for several, one such line per recipient (``... for <address>``, or that it is on the
    suppression list, with why) and the batch id. Items: (message id, address, the
    suppression reason or None)."""
    if len(ids) == 1:
        return str(S250_QUEUED(id=ids[0][0]))
    lines = [
        S250_QUEUED_FOR(id=m, to=clean(to)).text
        if why is None
        else S250_SUPPRESSED_FOR(id=m, to=clean(to), reason=why).text
        for m, to, why in ids
    ]
    lines.append(S250_BATCH(batch=batch_id, count=len(ids)).text)
    return _join(S250_QUEUED, lines)


def for_error(exc: errors.DomainError, reasons: Iterable[str]) -> str:
    """The reply for a refused message: every reason joined with ``; ``."""
    parts = list(reasons) or [exc.message]
    if exc.code == errors.RATE_LIMITED:
        return multiline(S451_RATE_LIMITED, parts)
    return multiline(S550_REJECTED, parts)


def _join(reply: Reply, lines: Sequence[str]) -> str:
    last = len(lines) - 1
    return "\r\n".join(
        f"{reply.code}{' ' if i == last else '-'}{reply.status} {line}"
        for i, line in enumerate(lines)
    )
