"""What ``--dkim`` makes the benchmarks send, checked on a few messages (not a benchmark).

    .venv/bin/python bench/dkim_check.py [--count 3] [--unsigned] [--env POSTROUTE_X=V]

Sets Postroute up as ``bench/http_send.py --dkim`` does (a fresh data dir, ``postroute
init``, the test DNS server, the From domain added over the API, published and verified,
``postroute serve``), with its pool pointing at the recording relay of the tests
(``tests/support/relay.py``) instead of the sink. Sends ``--count`` messages over HTTP
(``POST /v1/send``) and as many over SMTP (an IP credential for 127.0.0.1, as
``bench/smtp_ingress.py``), then checks each one the relay received: dkimpy accepts its
DKIM signature against the published key, and its envelope sender is
``bounces+<its X-Postroute-Message-ID>@bounces.<From domain>``. One line per message;
exit status 1 if any check failed. ``--unsigned`` checks the benchmarks' setup without
``--dkim`` instead: no signature, and the envelope sender of before sending domains (the
From address over HTTP, the client's own ``MAIL FROM`` over SMTP).
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import sys
import tempfile
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dkim
import httpx
from _domain import FROM_DOMAIN, SigningDomain
from _postroute import POSTROUTE, Postroute, run_cli
from _proc import LOOPBACK
from tests.support.relay import RecordingRelay

SENDER = f"sender@{FROM_DOMAIN}"
CLIENT_MAIL_FROM = f"app-bounces@{FROM_DOMAIN}"  # the SMTP client's own envelope sender


def send_http(pr: Postroute, pool: str, count: int) -> None:
    for i in range(count):
        body = {"from": f"Bench <{SENDER}>", "to": f"rcpt{i}@example.net", "pool": pool,
                "subject": f"DKIM check {i} über HTTP", "text": f"Message {i}.\n"}  # fmt: skip
        reply = httpx.post(f"{pr.url}/v1/send", json=body, headers=pr.headers, timeout=30)
        if reply.status_code != 202:
            raise SystemExit(f"HTTP send failed: {reply.status_code} {reply.text}")


def send_smtp(pr: Postroute, count: int) -> None:
    run_cli(pr.env, pr.workdir, "ip-credentials", "add", f"{LOOPBACK}/32", "--account",
            "default", "--description", "dkim check")  # fmt: skip
    port = int(pr.env["POSTROUTE_SMTP_BIND"].rpartition(":")[2])
    with smtplib.SMTP(LOOPBACK, port, timeout=30) as smtp:
        for i in range(count):
            msg = EmailMessage()
            msg["From"], msg["To"] = SENDER, f"rcpt{i}@example.net"
            msg["Subject"] = f"DKIM check {i} over SMTP"
            msg.set_content(f"Message {i}.\n")
            smtp.send_message(msg, from_addr=CLIENT_MAIL_FROM)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3, help="messages per ingress (1..100)")
    ap.add_argument("--unsigned", action="store_true", help="the setup without --dkim")
    ap.add_argument("--env", action="append", default=[], metavar="POSTROUTE_X=V")
    args = ap.parse_args()
    if not 1 <= args.count <= 100:
        ap.error("--count must be 1..100")
    workdir = Path(tempfile.mkdtemp(prefix="postroute-dkim-check-"))
    signing, pr = SigningDomain(), None
    dns = signing.dns
    failed = 0
    try:
        with RecordingRelay() as relay:
            pr = Postroute(workdir, False, args.env, None if args.unsigned else signing)
            pool = pr.create_pool(relay.port, 2)
            print(f"# {pr.add_domain()}", flush=True)
            send_http(pr, pool, args.count)
            send_smtp(pr, args.count)
            for m in sorted(relay.wait_for(2 * args.count, timeout=60), key=lambda m: m.mail_from):
                parsed = m.parsed()
                mid = parsed["X-Postroute-Message-ID"]
                if args.unsigned:
                    signed = b"DKIM-Signature:" not in m.data
                    want = SENDER if "HTTP" in parsed["Subject"] else CLIENT_MAIL_FROM
                else:
                    signed = dkim.DKIM(m.data).verify(dnsfunc=dns.txt)
                    want = f"bounces+{mid}@bounces.{FROM_DOMAIN}"
                ok = signed and m.mail_from == want
                failed += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {parsed['Subject']!r}: MAIL FROM:<{m.mail_from}>"
                      f" dkim={'as expected' if signed else 'FAIL'} s={_tag(m.data, b's')}"
                      f" d={_tag(m.data, b'd')}", flush=True)  # fmt: skip
    finally:
        if pr is not None:
            pr.stop()
        signing.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    what = "unsigned, envelope sender kept" if args.unsigned else "signed and VERP"
    print(f"# {2 * args.count - failed} of {2 * args.count} {what} ({POSTROUTE})")
    sys.exit(1 if failed else 0)


def _tag(data: bytes, name: bytes) -> str:
    """A tag of the first DKIM-Signature header (``s=``, ``d=``)."""
    head = data.split(b"DKIM-Signature:", 1)[-1].split(b"\r\n\r\n", 1)[0]
    for part in head.replace(b"\r\n", b"").split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name:
            return value.decode(errors="replace")
    return "?"


if __name__ == "__main__":
    main()
