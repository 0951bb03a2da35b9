"""The pipeline's ``prepare`` step for claimed messages, off the event loop when they are
signed.

An RSA-2048 DKIM signature costs about 0.2 ms of OpenSSL a message on a 2.6 GHz core,
and cryptography runs it without holding the GIL. In one preparation thread, it overlaps
with what the event loop does meanwhile (sending, reading replies, recording); in the loop
it would add to it. Messages that are not signed are prepared in the loop: their
preparation holds the GIL all along, so a thread would add only hand-offs.

One thread, and one caller at a time (the worker's claim loop): the per-content cache is
then used by one thread at a time.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from postroute.delivery import pipeline
from postroute.delivery.dispatch import Take
from postroute.delivery.flight import InFlight
from postroute.delivery.senders import Job
from postroute.preparation.cache import Cache

# Messages prepared per hand-off: the first ones reach their senders after one chunk.
CHUNK = 32


class Preparer:
    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="postroute-prepare")

    async def prepare(self, takes: list[tuple[InFlight, Take]]) -> list[Job]:
        """Each take's job, in order: in the preparation thread when one is signed."""
        if not any(fl.signing is not None for fl, _ in takes):
            return self._jobs(takes)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._jobs, takes)

    def close(self) -> None:
        """No new work; a chunk being prepared ends in its thread (its result unused)."""
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _jobs(self, takes: list[tuple[InFlight, Take]]) -> list[Job]:
        return [pipeline.prepare(fl, take, self._cache) for fl, take in takes]
