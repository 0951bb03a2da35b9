"""No client byte can forge a log line.

aiosmtpd logs what clients send (``%r unrecognised: %s`` writes a command as received,
and at INFO the senders and recipients), and Postroute's own SMTP lines may quote a
client's words. A client that sends a carriage return, a line feed, an escape sequence
or a Unicode line separator could then start a new, forged line in a log file or move a
terminal's cursor. :class:`EscapeControls`, a filter on both loggers, replaces every
non-printable character of a record's formatted message with its Python escape
(``\\r``, ``\\x1b``, ``\\u2028``) before any handler sees it.

Cost: one ``str.isprintable()`` per record emitted (records below the logger's level
never reach the filter); a message is rewritten only when it holds such a character.
"""

from __future__ import annotations

import logging

LOGGERS = ("mail.log", "postroute.smtp")  # aiosmtpd's logger, and ours


class EscapeControls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it, as it would anyway
            return True
        if not message.isprintable():
            record.msg, record.args = escape(message), None
        return True


def escape(text: str) -> str:
    """``text`` with every non-printable character (controls, format characters, line
    and paragraph separators, lone surrogates) written as its Python escape."""
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    if char in "\r\n\t":
        return repr(char)[1:-1]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def install() -> None:
    """Put the filter on aiosmtpd's and Postroute's SMTP loggers (once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, EscapeControls) for f in logger.filters):
            logger.addFilter(EscapeControls())
