"""CPU per message of preparing a message with and without DKIM (what the worker does
per recipient): ``prepare`` of a 2 KB message, shared content across recipients (so the
body hash is computed once per content, as in delivery).

    .venv/bin/python bench/dkim_sign.py [--count 20000] [--recipients 10] [--size 2048]

Prints, per mode (none, RSA-2048, RSA-2048 + Ed25519), the CPU microseconds per message
(``time.process_time``: this process only), and the difference to no signing. A
single-process measurement: run it on a quiet machine; it is not a test.
"""

from __future__ import annotations

import argparse
import time

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postroute.preparation import Outgoing, Signing, prepare
from postroute.preparation.dkim import Cache, DkimKey


def content(size: int) -> bytes:
    head = (
        b"From: Shop <shop@example.com>\r\nTo: customer@example.org\r\nSubject: Your order\r\n"
        b"Date: Fri, 04 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="us-ascii"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
    )
    line = b"Thank you for your order. It will ship within two working days.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def run(count: int, recipients: int, size: int, signing: Signing | None) -> float:
    """CPU microseconds per message."""
    cache = Cache()
    body = content(size)
    start = time.process_time()
    for i in range(count):
        submission = i // recipients
        out = Outgoing(
            f"msg_{i:026d}", "acct_1", f"<msg_{i}@example.com>", "shop@example.com",
            f"customer{i}@example.org", body, f"cnt_{submission}",
        )  # fmt: skip
        prepare(out, "smtp_A", signing, cache)
    return (time.process_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--recipients", type=int, default=10, help="messages per content")
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    rsa_key = DkimKey("example.com", "pr1", rsa.generate_private_key(65537, 2048))
    ed_key = DkimKey("example.com", "pr1e", ed25519.Ed25519PrivateKey.generate())
    vrp = "bounces+msg@bounces.example.com"
    modes = {
        "none": None,
        "rsa-2048": Signing(vrp, (rsa_key,)),
        "rsa-2048+ed25519": Signing(vrp, (rsa_key, ed_key)),
    }
    base = None
    for name, signing in modes.items():
        us = run(args.count, args.recipients, args.size, signing)
        base = us if base is None else base
        extra = "" if signing is None else f"  (+{us - base:.0f} us for signing)"
        print(f"{name:<18} {us:8.1f} us CPU per message{extra}")


if __name__ == "__main__":
    main()
