"""DKIM is the last step: a tracked message (links, pixel, List-Unsubscribe) verifies
with dkimpy, for each recipient of one content although their bodies differ; the
relaxed body canonicalisation made on the whole body is the line-by-line one."""

from __future__ import annotations

import random
import re

from postroute.preparation import Cache, Signing, prepare
from postroute.preparation.dkim import canonical_body
from tests.preparation.test_dkim import KEYS, verified
from tests.preparation.tracking_support import LINKS, MID, outgoing, single

HTML = (
    b'<html><body>\r\n<p>Hello  \t there</p>\r\n<a href="https://shop.example/a">a</a>\r\n'
    b'<a href="https://shop.example/b">b</a>   \r\n</body></html>\r\n\r\n\r\n'
)


def test_a_tracked_message_verifies_for_every_recipient_of_its_content() -> None:
    keys = [KEYS["rsa"], KEYS["ed25519"]]
    signing = Signing("bounces+x@bounces.example.com", tuple(keys))
    content = single(HTML)
    cache = Cache()
    bodies = set()
    for message_id in (MID, "msg_" + "1" * 26, "msg_" + "2" * 26):
        out = outgoing(content, unsubscribe=True, message_id=message_id)
        data = prepare(out, "smtp_A", signing, cache, LINKS).data
        assert verified(data, keys) == [True, True]
        assert b"h=from:to:subject:date:message-id:mime-version:content-type:" in data
        assert b"list-unsubscribe:list-unsubscribe-post:from;" in data
        bodies.add(data[data.index(b"<html>") :])
    assert len(bodies) == 3  # each recipient's own links, each signed over its own body


def reference(body: bytes) -> bytes:
    """RFC 6376 3.4.4 line by line."""
    lines = body.replace(b"\r\n", b"\n").split(b"\n")
    out = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in lines]
    while out and not out[-1]:
        out.pop()
    return b"".join(line + b"\r\n" for line in out)


def test_the_whole_body_canonical_form_is_the_line_by_line_one() -> None:
    rng = random.Random(8)
    alphabet = [b" ", b"\t", b"\r\n", b"\n", b"\r", b"a", b"b", b"=", b"\xc3\xa9"]
    for _ in range(3000):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert canonical_body(body) == reference(body), body
