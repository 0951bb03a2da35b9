"""CPU per message of preparing an HTML message with tracking on and off (what the worker
does per recipient): ``prepare`` of a message composed as ``POST /v1/send`` composes it
(text and HTML, multipart/alternative, the HTML quoted-printable), 10 links, DKIM on
(RSA-2048).

    .venv/bin/python bench/track_rewrite.py [--count 5000] [--recipients 10] [--links 10]

Modes, each printed as CPU microseconds per message (``time.process_time``: this process
only) and as the difference to ``off``:

- ``off``: no tracking, no List-Unsubscribe, ``--recipients`` messages per content (the
  body hash kept per content);
- ``on``: opens, clicks and List-Unsubscribe (links found once per content, tokens and
  the body hash per recipient);
- ``off, new content`` and ``on, new content``: the same with every message a content
  of its own, as a one-recipient send is (the links are found for each one);
- ``find links``: the per-content step alone (MIME walk, decode, parse twice, cut).

A single-process measurement: run it on a quiet machine; it is not a test.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import rsa

from postroute.kit import ids
from postroute.messages.compose import compose
from postroute.messages.schemas import SendRequest
from postroute.preparation import Cache, Links, Outgoing, Signing, Tokens, prepare
from postroute.preparation.dkim import DkimKey
from postroute.preparation.tracking import template

ROW = (
    '<tr><td style="padding:8px;font-family:Arial,sans-serif;font-size:14px;color:#333">'
    '<a href="https://shop.example.com/p/{n}?utm_source=mail&amp;utm_medium=email" '
    'style="color:#0a58ca;text-decoration:none">Product n°{n}</a> &ndash; 19,99&nbsp;&euro;'
    "</td></tr>\n"
)


def html(links: int) -> str:
    rows = "".join(ROW.format(n=n) for n in range(links))
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Your order</title>'
        "<style>td{padding:4px}</style></head><body>\n"
        '<!--[if mso]><table width="600"><tr><td><![endif]-->\n'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0">\n'
        f"{rows}</table>\n<p>Thanks for your order. Questions? "
        '<a href="mailto:help@shop.example.com">Write to us</a>.</p>\n'
        "<!--[if mso]></td></tr></table><![endif]-->\n</body></html>\n"
    )


def content(links: int) -> bytes:
    req = SendRequest.model_validate(
        {
            "from": "Shop <shop@example.com>",
            "to": ["customer@example.org"],
            "subject": "Your order",
            "html": html(links),
            "text": "Thanks for your order.\nhttps://shop.example.com/orders/1\n",
        }
    )
    return compose(req, date=datetime(2026, 12, 4, tzinfo=UTC))


def run(count: int, per_content: int, body: bytes, signing: Signing, links: Links | None) -> float:
    """CPU microseconds per message; ``per_content`` messages share each content."""
    cache = Cache()
    on = links is not None
    message_ids = [ids.new_id("msg") for _ in range(count)]
    start = time.process_time()
    for i, mid in enumerate(message_ids):
        out = Outgoing(
            mid, "acct_1", f"<{mid}@example.com>", "shop@example.com",
            f"customer{i}@example.org", body, f"cnt_{i // per_content}", None, on, on, on,
        )  # fmt: skip
        prepare(out, "smtp_A", signing, cache, links)
    return (time.process_time() - start) / count * 1e6


def timed(count: int, step: Callable[[], object]) -> float:
    start = time.process_time()
    for _ in range(count):
        step()
    return (time.process_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--recipients", type=int, default=10, help="messages per content")
    parser.add_argument("--links", type=int, default=10)
    args = parser.parse_args()
    key = DkimKey("example.com", "pr1", rsa.generate_private_key(65537, 2048))
    signing = Signing("bounces+msg@bounces.example.com", (key,))
    links = Links("https://track.example.com", Tokens(["bench-secret"]), "bounces.example.com")
    body = content(args.links)
    print(f"message: {len(body)} bytes, {args.links} links, DKIM rsa-2048")
    shared = f"{args.recipients} per content"
    off = run(args.count, args.recipients, body, signing, None)
    off_new = run(args.count, 1, body, signing, None)
    rows = [
        (f"off ({shared})", off, None),
        (f"on ({shared})", run(args.count, args.recipients, body, signing, links), off),
        ("off, new content", off_new, None),
        ("on, new content", run(args.count, 1, body, signing, links), off_new),
        ("find links", timed(args.count, lambda: template(body)), None),
    ]
    for name, us, against in rows:
        extra = "" if against is None else f"  (+{us - against:.0f} us for tracking)"
        print(f"{name:<22} {us:8.1f} us CPU per message{extra}")


if __name__ == "__main__":
    main()
