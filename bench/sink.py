"""A counting SMTP sink on 127.0.0.1 (aiosmtpd), used when Postfix's smtp-sink is absent.

Accepts everything, keeps nothing, and prints ``mesg=N`` (messages received so far) to
stdout whenever the count changed, at most every 10 ms, like ``smtp-sink -c``.

    python bench/sink.py --port 2526
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a Postroute dependency
    uvloop = None


class Counter:
    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages += 1
        return f"250 2.0.0 Ok: queued as SINK{self.messages}"


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    counter = Counter()
    server = await loop.create_server(
        lambda: SMTP(counter, hostname="sink.test", data_size_limit=64 * 1024 * 1024),
        "127.0.0.1",
        port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    shown = -1
    while not stop.is_set():
        if counter.messages != shown:
            shown = counter.messages
            sys.stdout.write(f"mesg={shown}\n")
            sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    if uvloop is not None:
        uvloop.install()
    asyncio.run(main(args.port))
