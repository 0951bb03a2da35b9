"""Open authenticated aiosmtplib sessions to an upstream relay; classify failures."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Iterator
from functools import lru_cache

import aiosmtplib

from postroute.relay.config import ClientOptions, RelayConfig
from postroute.relay.errors import (
    SMTP_AUTH_ERROR,
    SMTP_CONNECTION_ERROR,
    SMTP_RATE_LIMIT,
    SMTP_REJECTED,
    SMTP_TIMEOUT,
    SMTP_TLS_ERROR,
)

ENCRYPTIONS = frozenset({"tls", "ssl", "none"})

# 4xx replies that mean "slow down" (e.g. SES `454 Throttling failure`): by text, not code.
_THROTTLE_TEXT = re.compile(r"throttl|rate.?limit|too many|exceeded|quota", re.IGNORECASE)
_AUTH_CODES = frozenset({530, 534, 535})
_ENHANCED_STATUS = re.compile(r"([245])\.[0-7]\.\d{1,3}(?=\s|$)")


class RelayError(Exception):
    """A classified failure talking to an upstream relay.

    Built only from text that never held a secret: what the relay or aiosmtplib said
    during AUTH is not quoted (see :func:`open_session`), so there is nothing to mask."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        smtp_code: int | None = None,
        smtp_message: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.smtp_code = smtp_code
        self.smtp_message = smtp_message


@lru_cache(maxsize=32)
def tls_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """Client TLS context: system CAs plus `ca_file`, TLS >= 1.2.

    Cached per arguments (a changed file at the same path needs a restart)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RelaySession(aiosmtplib.SMTP):
    """An aiosmtplib session that can be closed for certain: `aclose()` or `abort()`.

    aiosmtplib's close() on a TLS connection only starts the TLS goodbye, which needs the
    event loop to keep running; these methods make sure the socket is really released."""

    _last_transport: asyncio.BaseTransport | None = None

    def close(self) -> None:
        if self.transport is not None:
            self._last_transport = self.transport
        super().close()

    def abort(self) -> None:
        """Drop the connection now: no QUIT, no TLS goodbye."""
        self.close()
        if isinstance(self._last_transport, asyncio.WriteTransport):
            self._last_transport.abort()

    async def aclose(self, *, send_quit: bool = True, grace: float = 2.0) -> None:
        """QUIT (best effort, if connected), close, wait up to `grace` s, then abort.

        Never raises for relay trouble."""
        if send_quit and self.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                async with asyncio.timeout(grace):
                    await self.quit()
        self.close()
        transport = self._last_transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # No event exists for "socket released": poll briefly.
        while sock is not None and sock.fileno() != -1 and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        if sock is not None and sock.fileno() != -1:
            self.abort()
            await asyncio.sleep(0)  # the transport releases its socket on the next loop pass


async def open_session(relay: RelayConfig, options: ClientOptions) -> RelaySession:
    """Connect, EHLO, STARTTLS/implicit TLS, AUTH within `options.timeout`; else RelayError."""
    if relay.encryption not in ENCRYPTIONS:
        raise ValueError(f"unknown encryption {relay.encryption!r}")
    context = None
    if relay.encryption != "none":
        ca_file = str(options.ca_file) if options.ca_file is not None else None
        context = tls_context(ca_file, relay.verify_tls)
    smtp = RelaySession(
        hostname=relay.host,
        port=relay.port,
        local_hostname=options.helo_name,
        timeout=options.timeout,
        use_tls=relay.encryption == "ssl",
        start_tls=False,  # never None: that means "upgrade if offered" (see NOTES)
        tls_context=context,
    )
    stage = "connect"
    failure: RelayError | None = None
    try:
        async with asyncio.timeout(options.timeout):
            await smtp.connect()
            stage = "EHLO"
            await smtp.ehlo()
            if relay.encryption == "tls":
                stage = "STARTTLS"
                await _starttls(smtp)
                stage = "EHLO"
                await smtp.ehlo()
            if relay.username:
                stage = "AUTH"
                await _login(smtp, relay.username, relay.password or "")
    except Exception as exc:
        smtp.abort()
        failure = _failure(exc, stage, relay, options)
    except BaseException:
        smtp.abort()
        raise
    if failure is not None:  # raised here, outside the handler: no trace of the cause
        raise failure
    return smtp


def _failure(
    exc: BaseException, stage: str, relay: RelayConfig, options: ClientOptions
) -> RelayError:
    error = _auth_failure(exc) if stage == "AUTH" else _for_stage(classify(exc), stage)
    where = f"{stage} at {relay.host}:{relay.port}"
    if error.code == SMTP_TIMEOUT and isinstance(exc, TimeoutError):
        detail = f"{where}: no answer within {options.timeout:g} s"
    else:
        detail = f"{where}: {error.detail}"
    return RelayError(
        error.code, detail, smtp_code=error.smtp_code, smtp_message=error.smtp_message
    )


async def _starttls(smtp: aiosmtplib.SMTP) -> None:
    if not smtp.supports_extension("starttls"):
        raise RelayError(SMTP_TLS_ERROR, "STARTTLS required but not offered by the relay")
    await smtp.starttls()


async def _login(smtp: aiosmtplib.SMTP, username: str, password: str) -> None:
    if not smtp.supports_extension("auth"):
        raise RelayError(SMTP_AUTH_ERROR, "credentials configured but the relay offers no AUTH")
    if not smtp.supported_auth_methods:
        offered = " ".join(sorted(m.upper() for m in smtp.server_auth_methods))
        raise RelayError(
            SMTP_AUTH_ERROR, f"the relay offers no AUTH mechanism Postroute knows ({offered})"
        )
    await smtp.login(username, password)


def _auth_failure(exc: BaseException) -> RelayError:
    """A failure during AUTH, described without the relay's text or the exception's.

    A relay may quote back what it was sent (the base64 AUTH PLAIN string, the base64
    password of AUTH LOGIN), and aiosmtplib puts the reply's text into its exceptions:
    only the reply code and its enhanced status code are kept. The text still decides
    the kind (a throttling 454, a 530 asking for STARTTLS), never the words shown."""
    if isinstance(exc, RelayError):  # ours, from fixed text
        return exc
    kind = _for_stage(classify(exc), "AUTH").code
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
        status = _enhanced_status(exc.code, exc.message)
        reply = f"{exc.code} {status}" if status else str(exc.code)
        return RelayError(
            kind, f"relay refused AUTH ({reply})", smtp_code=exc.code, smtp_message=status
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return RelayError(kind, "relay sent an unreadable reply to AUTH")
    return RelayError(kind, f"AUTH failed: {type(exc).__name__}")


def _enhanced_status(code: int, message: str) -> str | None:
    """The enhanced status code (RFC 3463) that starts a reply's text, e.g. ``5.7.8``."""
    found = _ENHANCED_STATUS.match(message)
    if found is None or found.group(1) != str(code)[0]:
        return None
    return found.group(0)


def _for_stage(error: RelayError, stage: str) -> RelayError:
    """A reply refusing STARTTLS is a TLS error; one refusing AUTH is an auth error."""
    if error.code != SMTP_REJECTED or stage not in ("STARTTLS", "AUTH"):
        return error
    code = SMTP_TLS_ERROR if stage == "STARTTLS" else SMTP_AUTH_ERROR
    return RelayError(
        code, error.detail, smtp_code=error.smtp_code, smtp_message=error.smtp_message
    )


def classify(exc: BaseException) -> RelayError:
    """Map an aiosmtplib/ssl/OSError/timeout exception (and its causes) to a RelayError."""
    if isinstance(exc, RelayError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    chain = list(_causes(exc))
    tls_exc = next((e for e in chain if isinstance(e, ssl.SSLError | ssl.CertificateError)), None)
    if tls_exc is not None:
        return RelayError(SMTP_TLS_ERROR, f"TLS failure: {_describe(tls_exc)}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        auth = isinstance(exc, aiosmtplib.SMTPAuthenticationError)
        return _from_reply(exc.code, exc.message, auth=auth)
    if any(isinstance(e, TimeoutError) for e in chain):
        text = str(exc).strip()
        return RelayError(SMTP_TIMEOUT, f"timed out: {text}" if text else "timed out")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return RelayError(SMTP_REJECTED, _describe(exc))
    if isinstance(exc, aiosmtplib.SMTPException) and not isinstance(exc, ConnectionError):
        text = exc.message.lower()
        if "starttls" in text or "using tls" in text:
            return RelayError(SMTP_TLS_ERROR, exc.message)
        if "auth" in text:
            return RelayError(SMTP_AUTH_ERROR, exc.message)
    return RelayError(SMTP_CONNECTION_ERROR, _describe(exc))


def _from_reply(code: int, message: str, *, auth: bool) -> RelayError:
    text = f"{code} {message}".strip()
    if 400 <= code < 500 and _THROTTLE_TEXT.search(message):
        kind = SMTP_RATE_LIMIT
    elif code == 530 and "tls" in message.lower():
        kind = SMTP_TLS_ERROR  # "530 Must issue a STARTTLS command first"
    elif auth or code in _AUTH_CODES:
        kind = SMTP_AUTH_ERROR
    else:
        kind = SMTP_REJECTED
    return RelayError(kind, f"relay replied {text}", smtp_code=code, smtp_message=message)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it was raised from, as a traceback would show it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def reply_error_code(code: int, message: str) -> str:
    """The error code a relay's reply stands for (e.g. ``smtp_rate_limit`` for SES throttling)."""
    return _from_reply(code, message, auth=False).code
