"""DKIM signatures made with ``cryptography``, checked by an independent verifier
(dkimpy) against the public key as published: RSA and Ed25519, both at once, a UTF-8
subject, folded headers and an 8-bit body, and a signature that outlives a swap of the
pool header."""

from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postroute.preparation import Outgoing, Signing, prepare
from postroute.preparation.dkim import Cache, DkimKey, canonical_body
from postroute.preparation.dkim import sign as dkim_sign

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED = ed25519.Ed25519PrivateKey.generate()


def record(key: DkimKey) -> bytes:
    if isinstance(key.private, ed25519.Ed25519PrivateKey):
        raw = key.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    der = key.private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


KEYS = {
    "rsa": DkimKey("example.com", "pr1", RSA),
    "ed25519": DkimKey("example.com", "pr1e", ED),
}


def dns(keys: list[DkimKey]) -> dkim.DNSFunc:  # type: ignore[name-defined]
    published = {f"{k.selector}._domainkey.{k.domain}.".encode(): record(k) for k in keys}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return published.get(name)

    return lookup


def verified(data: bytes, keys: list[DkimKey]) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of ``data`` (the first is the top one)."""
    checker = dkim.DKIM(data)
    count = data.count(b"DKIM-Signature:")
    return [checker.verify(idx=i, dnsfunc=dns(keys)) for i in range(count)]


CONTENT = (
    b"From: Shop <shop@example.com>\r\nTo: a@example.org\r\n"
    b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe  aus\t\tK\xc3\xb6ln \r\n\r\n\r\n"
)


def outgoing(content: bytes = CONTENT) -> Outgoing:
    return Outgoing("msg_1", "acct_1", "<msg_1@example.com>", "shop@example.com",
                    "a@example.org", content, "cnt_1")  # fmt: skip


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_signature_verifies_with_dkimpy(algorithm: str) -> None:
    key = KEYS[algorithm]
    data = prepare(outgoing(), "smtp_A", Signing("bounces+msg_1@bounces.example.com", (key,))).data
    assert data.startswith(b"DKIM-Signature: v=1; a=" + key.algorithm.encode())
    assert verified(data, [key]) == [True]


def test_dual_signing_gives_two_signatures_that_verify() -> None:
    keys = [KEYS["rsa"], KEYS["ed25519"]]
    data = prepare(outgoing(), "smtp_A", Signing("b@x.example.com", tuple(keys))).data
    assert verified(data, keys) == [True, True]


def test_the_pool_header_is_not_signed_and_can_be_swapped() -> None:
    key = KEYS["rsa"]
    prepared = prepare(outgoing(), "smtp_A", Signing("b@x.example.com", (key,)))
    swapped = prepared.for_pool("smtp_Backup")
    assert b"X-Postroute-Pool-ID: smtp_Backup" in swapped.data
    assert verified(swapped.data, [key]) == [True]
    tampered = swapped.data.replace(b"Subject: =?utf-8?b?R3LDvMOfZQ==?=", b"Subject: Hello")
    assert verified(tampered, [key]) == [False]


def test_folded_headers_and_a_cached_content_verify() -> None:
    folded = CONTENT.replace(b"To: a@example.org", b"To: First <a@example.org>,\r\n  b@example.org")
    cache = Cache()
    key = KEYS["rsa"]
    for recipient in ("a@example.org", "b@example.org"):
        out = Outgoing(f"msg_{recipient[0]}", "acct_1", f"<msg_{recipient[0]}@example.com>",
                       "shop@example.com", recipient, folded, "cnt_folded")  # fmt: skip
        data = prepare(out, "smtp_A", Signing("b@x.example.com", (key,)), cache).data
        assert verified(data, [key]) == [True]


def test_the_signature_is_the_same_whenever_it_is_made() -> None:
    signing = Signing("b@x.example.com", (KEYS["rsa"],))
    first, again = prepare(outgoing(), "smtp_A", signing), prepare(outgoing(), "smtp_A", signing)
    assert first.data == again.data
    signature = first.data.replace(b"\r\n\t", b"").split(b"\r\n", 1)[0]  # on top
    assert signature.startswith(b"DKIM-Signature:")
    tags = [tag.split(b"=", 1)[0].strip() for tag in signature.split(b":", 1)[1].split(b";")]
    assert b"t" not in tags and b"x" not in tags  # no signing time or expiry: nothing varies


def test_a_message_with_lf_line_ends_is_split_at_its_first_blank_line() -> None:
    """A CRLF blank line later in the body is body, not the end of the header block."""
    lf = b"From: shop@example.com\nSubject: Hi\n\nfirst\r\n\r\nsecond\n"
    crlf = lf.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    keys = [KEYS["rsa"]]
    assert dkim_sign(keys, b"", lf) == dkim_sign(keys, b"", crlf)
    assert b"h=from:subject:from;" in dkim_sign(keys, b"", lf).replace(b"\r\n\t", b"")


def test_relaxed_body_canonicalisation() -> None:
    assert canonical_body(b"a  b \t\r\nc\r\n\r\n\r\n") == b"a b\r\nc\r\n"
    assert canonical_body(b"") == b""
    assert canonical_body(b"x") == b"x\r\n"
