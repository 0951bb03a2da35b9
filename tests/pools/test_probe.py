"""Connection test against real local servers (no mocks), plus the relay double itself."""

# Fixtures are imported explicitly (the module then works without conftest.py); their
# names come back as test parameters, which ruff would flag as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
import traceback

import aiosmtplib
import pytest
import trustme

from postroute.pools.probe import TEST_SUBJECT, ProbeResult, probe
from postroute.relay.config import ClientOptions, RelayConfig
from postroute.relay.errors import (
    SMTP_AUTH_ERROR,
    SMTP_CONNECTION_ERROR,
    SMTP_RATE_LIMIT,
    SMTP_REJECTED,
    SMTP_TIMEOUT,
    SMTP_TLS_ERROR,
)
from postroute.relay.session import RelayError, classify, open_session
from tests.delivery.conftest import EchoingRelay, secret_forms
from tests.support.fixtures import (  # noqa: F401
    RelayCA,
    RelayFactory,
    closed_port,
    relay,
    relay_ca,
    relay_factory,
    silent_server,
)
from tests.support.relay import Command, RecordingRelay, SilentServer

PASSWORD = "s3cr3t-Pa55word!"
USERS = {"pool-user": PASSWORD}


@pytest.fixture
def options(relay_ca: RelayCA) -> ClientOptions:
    return ClientOptions(timeout=3.0, ca_file=relay_ca.ca_file, helo_name="probe.test")


def config(relay: RecordingRelay, encryption: str, **kwargs: object) -> RelayConfig:
    kwargs.setdefault("username", "pool-user")
    kwargs.setdefault("password", PASSWORD)
    return RelayConfig(host=relay.host, port=relay.port, encryption=encryption, **kwargs)  # type: ignore[arg-type]


def assert_failed(result: ProbeResult, code: str) -> None:
    assert not result.success, result
    assert result.error_code == code, result
    assert result.error_detail
    assert result.as_dict()["error"] == {"code": code, "detail": result.error_detail}
    assert PASSWORD not in json.dumps(result.as_dict())


# -- successful sessions ---------------------------------------------------------------


async def test_starttls_with_auth_succeeds(
    relay_factory: RelayFactory, options: ClientOptions
) -> None:
    relay = relay_factory(tls="starttls", require_tls=True, auth=USERS)

    result = await probe(config(relay, "tls"), options)

    assert result.success, result
    assert result.latency_ms >= 0
    assert result.as_dict() == {
        "success": True,
        "message": result.message,
        "latency_ms": result.latency_ms,
        "error": None,
    }
    assert relay.auth_attempts == [("pool-user", True)]
    assert relay.messages == []
    await relay.wait_idle_async()
    assert relay.connections == 1


async def test_implicit_tls_with_auth_succeeds(
    relay_factory: RelayFactory, options: ClientOptions
) -> None:
    relay = relay_factory(tls="implicit", auth=USERS)

    result = await probe(config(relay, "ssl"), options)

    assert result.success, result
    assert relay.auth_attempts == [("pool-user", True)]


async def test_plain_relay_without_auth_succeeds(
    relay: RecordingRelay, options: ClientOptions
) -> None:
    result = await probe(config(relay, "none", username=None, password=None), options)

    assert result.success, result
    assert relay.auth_attempts == []


async def test_latency_measures_the_whole_session_with_the_given_clock(
    relay: RecordingRelay, options: ClientOptions
) -> None:
    ticks = iter([100.0, 100.25])

    result = await probe(config(relay, "none", username=None), options, clock=lambda: next(ticks))

    assert result.latency_ms == 250


async def test_recipient_gets_a_real_test_message(
    relay_factory: RelayFactory, options: ClientOptions
) -> None:
    relay = relay_factory(tls="starttls", auth=USERS)

    result = await probe(config(relay, "tls"), options, recipient="ops@example.com")

    assert result.success, result
    [message] = relay.wait_for(1)
    assert message.rcpt_tos == ("ops@example.com",)
    assert message.mail_from == "postroute-test@localhost"
    assert message.tls and message.auth_user == "pool-user"
    parsed = message.parsed()
    assert parsed["Subject"] == TEST_SUBJECT
    assert parsed["From"] == "postroute-test@localhost"
    assert parsed["To"] == "ops@example.com"
    assert parsed["Message-ID"]


async def test_recipient_with_explicit_sender(
    relay: RecordingRelay, options: ClientOptions
) -> None:
    result = await probe(
        config(relay, "none", username=None),
        options,
        recipient="ops@example.com",
        sender="noreply@example.org",
    )

    assert result.success, result
    [message] = relay.wait_for(1)
    assert message.mail_from == "noreply@example.org"
    assert message.parsed()["From"] == "noreply@example.org"


# -- failures --------------------------------------------------------------------------


async def test_wrong_password_is_an_auth_error(
    relay_factory: RelayFactory, options: ClientOptions
) -> None:
    relay = relay_factory(tls="starttls", auth={"pool-user": "another-password"})

    result = await probe(config(relay, "tls"), options)

    assert_failed(result, SMTP_AUTH_ERROR)
    assert "535" in (result.error_detail or "")
    assert relay.auth_attempts and not relay.auth_attempts[0][1]


async def test_relay_without_auth_is_an_auth_error(
    relay: RecordingRelay, options: ClientOptions
) -> None:
    result = await probe(config(relay, "none"), options)

    assert_failed(result, SMTP_AUTH_ERROR)


async def test_closed_port_is_a_connection_error(closed_port: int, options: ClientOptions) -> None:
    relay = RelayConfig(host="127.0.0.1", port=closed_port, encryption="none")

    result = await probe(relay, options)

    assert_failed(result, SMTP_CONNECTION_ERROR)


async def test_silent_server_times_out_within_the_timeout(silent_server: SilentServer) -> None:
    relay = RelayConfig(host=silent_server.host, port=silent_server.port, encryption="tls")

    result = await asyncio.wait_for(probe(relay, ClientOptions(timeout=0.5)), timeout=10)

    assert_failed(result, SMTP_TIMEOUT)
    assert silent_server.connections == 1


async def test_implicit_tls_to_a_silent_server_times_out(silent_server: SilentServer) -> None:
    relay = RelayConfig(host=silent_server.host, port=silent_server.port, encryption="ssl")

    result = await asyncio.wait_for(probe(relay, ClientOptions(timeout=0.5)), timeout=10)

    assert_failed(result, SMTP_TIMEOUT)


async def test_starttls_required_but_not_offered_is_a_tls_error(
    relay: RecordingRelay, options: ClientOptions
) -> None:
    result = await probe(config(relay, "tls"), options)

    assert_failed(result, SMTP_TLS_ERROR)
    assert "STARTTLS" in (result.error_detail or "")
    assert relay.auth_attempts == []  # never fell back to a plain AUTH


async def test_implicit_tls_to_a_plain_relay_is_a_tls_error(
    relay: RecordingRelay, options: ClientOptions
) -> None:
    result = await probe(config(relay, "ssl"), options)

    assert_failed(result, SMTP_TLS_ERROR)


@pytest.mark.parametrize(("tls", "encryption"), [("starttls", "tls"), ("implicit", "ssl")])
async def test_untrusted_certificate(
    relay_factory: RelayFactory, options: ClientOptions, tls: str, encryption: str
) -> None:
    relay = relay_factory(tls=tls, auth=USERS, ca=trustme.CA())  # not options.ca_file's CA

    verified = await probe(config(relay, encryption), options)
    unverified = await probe(config(relay, encryption, verify_tls=False), options)

    assert_failed(verified, SMTP_TLS_ERROR)
    assert "certificate" in (verified.error_detail or "").lower()
    assert unverified.success, unverified
    assert relay.auth_attempts == [("pool-user", True)]  # only the unverified session


async def test_certificate_for_another_host_name_is_a_tls_error(
    relay_factory: RelayFactory, options: ClientOptions
) -> None:
    relay = relay_factory(tls="starttls", cert_names=("mail.example.com",))  # trusted CA

    result = await probe(config(relay, "tls", username=None), options)
    unverified = await probe(config(relay, "tls", username=None, verify_tls=False), options)

    assert_failed(result, SMTP_TLS_ERROR)
    assert "127.0.0.1" in (result.error_detail or "")
    assert unverified.success, unverified


async def test_rejected_recipient(relay: RecordingRelay, options: ClientOptions) -> None:
    relay.script(rcpt=["550 5.1.1 <nobody@example.com>: Recipient address rejected"])

    result = await probe(
        config(relay, "none", username=None), options, recipient="nobody@example.com"
    )

    assert_failed(result, SMTP_REJECTED)
    assert "550 5.1.1" in (result.error_detail or "")
    assert relay.messages == []


async def test_rejected_data(relay: RecordingRelay, options: ClientOptions) -> None:
    relay.script(data=["554 5.7.1 Message rejected: spam"])

    result = await probe(config(relay, "none", username=None), options, recipient="a@example.com")

    assert_failed(result, SMTP_REJECTED)
    assert "554 5.7.1" in (result.error_detail or "")
    assert len(relay.rejected) == 1


async def test_throttling_reply_reports_as_rejected(
    relay: RecordingRelay, options: ClientOptions
) -> None:
    relay.script(mail=["454 4.7.0 Throttling failure: Maximum sending rate exceeded."])

    result = await probe(config(relay, "none", username=None), options, recipient="a@example.com")

    assert_failed(result, SMTP_REJECTED)
    assert "Throttling failure" in (result.error_detail or "")


async def test_relay_answering_421_is_rejected(
    relay_factory: RelayFactory, options: ClientOptions
) -> None:
    relay = relay_factory(reject_connections=True)

    result = await probe(config(relay, "none", username=None), options)

    assert_failed(result, SMTP_REJECTED)
    assert "421" in (result.error_detail or "")


@pytest.mark.parametrize("password", ["p", "5", "relay", PASSWORD])
async def test_credentials_quoted_back_at_auth_never_appear(
    options: ClientOptions, password: str
) -> None:
    """A relay that answers AUTH with the credentials it got (as given and in base64):
    neither the result nor the error quotes its reply, so nothing needs masking (and
    nothing is mangled: "5" used to come out as "***3*** ***.7.8")."""
    with EchoingRelay(auth={"pool-user": "the-right-password"}) as relay:
        smtp = aiosmtplib.SMTP(hostname=relay.host, port=relay.port, start_tls=False)
        await smtp.connect()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as quoted:
            await smtp.login("pool-user", password)
        await smtp.quit()
        result = await probe(config(relay, "none", password=password), options)
        with pytest.raises(RelayError) as caught:
            await open_session(config(relay, "none", password=password), options)

    forms = secret_forms("pool-user", password)
    assert all(form in quoted.value.message for form in forms)  # the relay does echo them
    refused = f"AUTH at 127.0.0.1:{relay.port}: relay refused AUTH (535 5.7.8)"
    assert_failed(result, SMTP_AUTH_ERROR)
    assert result.error_detail == refused
    error = caught.value
    assert (error.code, error.detail, error.smtp_code) == (SMTP_AUTH_ERROR, refused, 535)
    assert error.smtp_message == "5.7.8"
    assert error.__cause__ is None and error.__context__ is None  # no trace of the reply
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    texts += [repr(result), json.dumps(result.as_dict())]
    for text in texts:
        assert "echo" not in text.lower()
        assert all(form.lower() not in text.lower() for form in forms[1:])
    assert PASSWORD not in "".join(texts)
    assert PASSWORD not in repr(config(relay, "none"))


# -- open_session and classify ---------------------------------------------------------


async def test_open_session_returns_an_authenticated_encrypted_session(
    relay_factory: RelayFactory, options: ClientOptions
) -> None:
    relay = relay_factory(tls="starttls", require_tls=True, auth=USERS)

    smtp = await open_session(config(relay, "tls"), options)
    try:
        assert smtp.get_transport_info("sslcontext") is not None
        for n in range(3):
            await smtp.sendmail("a@example.com", ["b@example.com"], f"Subject: {n}\r\n\r\nhi\r\n")
    finally:
        await smtp.aclose()
    assert not smtp.is_connected

    messages = relay.wait_for(3)
    assert {m.session_id for m in messages} == {1}
    assert all(m.tls and m.auth_user == "pool-user" for m in messages)
    assert relay.rset_count == 0  # aiosmtplib sends RSET only after errors


async def test_open_session_failure_carries_the_smtp_reply(
    relay_factory: RelayFactory, options: ClientOptions
) -> None:
    relay = relay_factory(tls="starttls", auth={"pool-user": "x"})

    with pytest.raises(RelayError) as caught:
        await open_session(config(relay, "tls"), options)

    assert caught.value.code == SMTP_AUTH_ERROR
    assert caught.value.smtp_code == 535
    assert caught.value.smtp_message and "5.7.8" in caught.value.smtp_message
    assert caught.value.detail.startswith(f"AUTH at 127.0.0.1:{relay.port}")


async def test_classify_recipient_and_sender_refusals(relay: RecordingRelay) -> None:
    relay.script(
        mail=["451 4.3.0 try later", "454 4.7.0 Throttling failure: Maximum sending rate exceeded"],
        rcpt=["550 5.1.1 unknown user"],
    )
    async with aiosmtplib.SMTP(hostname=relay.host, port=relay.port, start_tls=False) as smtp:
        errors = []
        for _ in range(3):
            try:
                await smtp.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nx\r\n")
            except aiosmtplib.SMTPException as exc:
                errors.append(classify(exc))

    assert [(e.code, e.smtp_code) for e in errors] == [
        (SMTP_REJECTED, 451),
        (SMTP_RATE_LIMIT, 454),
        (SMTP_REJECTED, 550),
    ]
    assert errors[2].smtp_message == "5.1.1 unknown user"
    assert relay.rset_count == 3  # aiosmtplib resets after each failed transaction


def test_classify_by_code_and_text() -> None:
    auth = aiosmtplib.SMTPAuthenticationError(454, "4.7.0 Temporary authentication failure")
    throttled = aiosmtplib.SMTPSenderRefused(454, "Throttling failure: rate exceeded", "a@b")
    starttls_first = aiosmtplib.SMTPSenderRefused(530, "Must issue a STARTTLS command first", "a@b")
    auth_required = aiosmtplib.SMTPSenderRefused(530, "5.7.0 Authentication required", "a@b")
    wrapped_tls = aiosmtplib.SMTPConnectError("Error connecting")
    wrapped_tls.__cause__ = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")

    assert classify(auth).code == SMTP_AUTH_ERROR
    assert classify(throttled).code == SMTP_RATE_LIMIT
    assert classify(starttls_first).code == SMTP_TLS_ERROR
    assert classify(auth_required).code == SMTP_AUTH_ERROR
    assert classify(wrapped_tls).code == SMTP_TLS_ERROR
    assert classify(aiosmtplib.SMTPReadTimeoutError("slow")).code == SMTP_TIMEOUT
    assert classify(TimeoutError()).code == SMTP_TIMEOUT
    assert classify(ConnectionRefusedError(111, "refused")).code == SMTP_CONNECTION_ERROR
    assert classify(aiosmtplib.SMTPServerDisconnected("gone")).code == SMTP_CONNECTION_ERROR


# -- the recording relay itself ---------------------------------------------------------


def test_relay_counts_connections_and_concurrent_sessions(relay: RecordingRelay) -> None:
    for _ in range(2):
        with smtplib.SMTP(relay.host, relay.port, timeout=5) as client:
            client.noop()
    relay.wait_idle()
    assert (relay.connections, relay.peak_sessions) == (2, 1)

    with (
        smtplib.SMTP(relay.host, relay.port, timeout=5) as a,
        smtplib.SMTP(relay.host, relay.port, timeout=5) as b,
        smtplib.SMTP(relay.host, relay.port, timeout=5) as c,
    ):
        for client in (a, b, c):
            client.noop()
        assert relay.current_sessions == 3
    relay.wait_idle()
    assert (relay.connections, relay.peak_sessions, relay.current_sessions) == (5, 3, 0)


def test_relay_scripted_replies_in_order(relay: RecordingRelay) -> None:
    relay.script(
        rcpt=["451 4.3.0 try later"],
        data=["451 4.3.0 try later", "250 2.0.0 Ok: queued as ABC123"],
    )
    with smtplib.SMTP(relay.host, relay.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: 1\r\n\r\none\r\n")
        assert refused.value.recipients["b@example.com"][0] == 451
        with pytest.raises(smtplib.SMTPDataError) as data_error:
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: 2\r\n\r\ntwo\r\n")
        assert data_error.value.smtp_code == 451
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: 3\r\n\r\nthree\r\n")
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: 4\r\n\r\nfour\r\n")

    messages = relay.wait_for(2)
    assert messages[0].queue_id == "ABC123"
    assert messages[1].queue_id and messages[1].queue_id != "ABC123"  # default reply again
    assert messages[0].parsed()["Subject"] == "3"
    assert [m.parsed()["Subject"] for m in relay.rejected] == ["2"]
    assert relay.rset_count >= 1  # smtplib resets after the refused recipient


def test_relay_callable_script_and_raw_bytes(relay: RecordingRelay) -> None:
    seen: list[Command] = []

    def rcpt(command: Command) -> str | None:
        seen.append(command)
        return "550 5.1.1 no such user" if command.address == "bad@example.com" else None

    relay.script(rcpt=rcpt)
    raw = b"Subject: dots\r\n\r\n.leading dot\r\nline\r\n"
    with smtplib.SMTP(relay.host, relay.port, timeout=5) as client:
        refused = client.sendmail("a@example.com", ["ok@example.com", "bad@example.com"], raw)

    assert refused == {"bad@example.com": (550, b"5.1.1 no such user")}
    [message] = relay.wait_for(1)
    assert message.rcpt_tos == ("ok@example.com",)
    assert message.data == raw
    assert [c.address for c in seen] == ["ok@example.com", "bad@example.com"]
    assert seen[1].rcpt_tos == ("ok@example.com",) and seen[1].mail_from == "a@example.com"
    assert message.received_monotonic <= time.monotonic()
    assert abs(message.received_at - time.time()) < 60


def test_relay_421_reply_closes_the_connection(relay: RecordingRelay) -> None:
    relay.script(mail=["421 4.7.0 too many connections"])
    with smtplib.SMTP(relay.host, relay.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@example.com", ["b@example.com"], b"x\r\n")
        assert refused.value.smtp_code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    relay.wait_idle()


def test_relay_reject_connections_mode(relay: RecordingRelay) -> None:
    relay.reject_connections = True
    with pytest.raises(smtplib.SMTPConnectError) as caught:
        smtplib.SMTP(relay.host, relay.port, timeout=5)
    assert caught.value.smtp_code == 421

    relay.reject_connections = False
    with smtplib.SMTP(relay.host, relay.port, timeout=5) as client:
        assert client.noop()[0] == 250
    assert relay.connections == 2


def test_relay_starttls_auth_with_smtplib(relay_factory: RelayFactory, relay_ca: RelayCA) -> None:
    relay = relay_factory(tls="starttls", require_tls=True, auth=USERS)
    context = ssl.create_default_context(cafile=str(relay_ca.ca_file))
    with smtplib.SMTP("localhost", relay.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # AUTH only after STARTTLS
        assert client.mail("a@example.com")[0] == 530  # and nothing else before it
        client.starttls(context=context)
        client.ehlo()
        client.login("pool-user", PASSWORD)
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: s\r\n\r\nx\r\n")

    [message] = relay.wait_for(1)
    assert message.tls and message.auth_user == "pool-user"


def test_relay_requires_auth_before_mail(relay_factory: RelayFactory) -> None:
    relay = relay_factory(auth=USERS)
    with smtplib.SMTP(relay.host, relay.port, timeout=5) as client:
        client.ehlo()
        assert client.mail("a@example.com")[0] == 530
        client.login("pool-user", PASSWORD)  # plain AUTH offered: tls="none"
        assert client.mail("a@example.com")[0] == 250


def test_relay_wait_for_times_out(relay: RecordingRelay) -> None:
    with pytest.raises(TimeoutError):
        relay.wait_for(1, timeout=0.05)


def test_relay_rejects_malformed_scripted_replies(relay: RecordingRelay) -> None:
    with pytest.raises(ValueError, match="not an SMTP reply"):
        relay.script(data=["queued"])
