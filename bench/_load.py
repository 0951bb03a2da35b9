"""Load generation: batches of ~size-byte messages sent with K concurrent httpx clients.

Request bodies are serialised before the clock starts, so the load generator spends
its time on HTTP only. With ``procs > 1`` the batches are split between forked
processes (each builds its share, then all start together on a barrier).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

# What Postroute adds around the text body (headers, MIME), measured on 0.1.0: the
# prepared message of a 1,583-byte text body is ~2,048 bytes. See `mime_bytes` in the output.
MIME_OVERHEAD = 465
LINE = 75  # body lines stay short: 7bit, no quoted-printable


@dataclass
class LoadResult:
    accepted: int = 0
    failed: int = 0
    finished_at: float = 0.0  # time.monotonic() when this generator's last reply arrived
    first_error: str = ""
    message_ids: list[str] = field(default_factory=list)


def text_body(index: int, size: int) -> str:
    head = f"Benchmark message {index}.\n"
    want = max(size - MIME_OVERHEAD - len(head), LINE)
    line = ("x" * (LINE - 1)) + "\n"
    filler = (line * (want // LINE + 1))[:want]
    return head + filler


def html_body(index: int, links: int) -> str:
    """An HTML part of ``links`` distinct links (each message its own, as a receipt's item
    links are): each message is a content of its own, so links are found per message."""
    items = "".join(
        f'<tr><td><a href="https://shop.bench.test/item/{k}?order={index}">Item {k}</a></td>'
        f"<td>1 &times; &euro;{k}.00</td></tr>"
        for k in range(links)
    )
    return (
        f"<!doctype html><html><body><p>Receipt for order {index}.</p>"
        f"<table>{items}</table><p>Thank you.</p></body></html>"
    )


@dataclass(frozen=True)
class Shape:
    """What each message carries besides its text: ``html_links`` > 0 adds an HTML part of
    that many links; ``track`` sets opens, clicks and unsubscribe on (True) or off
    (False) per message, or leaves them out (None: the account's defaults, and what
    releases before tracking accept)."""

    pool: str
    html_links: int = 0
    track: bool | None = None

    def fields(self, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {"pool": self.pool}
        if self.html_links:
            out["html"] = html_body(index, self.html_links)
        if self.track is not None:
            out.update(track_opens=self.track, track_clicks=self.track, unsubscribe=self.track)
        return out


def build_batches(start: int, count: int, size: int, batch: int, shape: Shape) -> list[bytes]:
    """Serialised ``/v1/send/batch`` bodies for messages ``start .. start+count-1``."""
    bodies = []
    for first in range(start, start + count, batch):
        last = min(first + batch, start + count)
        messages = [
            {
                "from": "Bench <sender@bench.test>",
                "to": f"rcpt{i}@bench.test",
                "subject": f"Benchmark {i}",
                "text": text_body(i, size),
                **shape.fields(i),
            }
            for i in range(first, last)
        ]
        bodies.append(json.dumps({"messages": messages}).encode())
    return bodies


async def send_batches(
    url: str, api_key: str, bodies: list[bytes], concurrency: int, http_timeout: float
) -> LoadResult:
    """POST every body to ``{url}/v1/send/batch`` from ``concurrency`` clients."""
    result = LoadResult()
    queue = list(reversed(bodies))
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=http_timeout) as http:
            while queue:
                body = queue.pop()
                try:
                    reply = await http.post("/v1/send/batch", content=body)
                except httpx.HTTPError as exc:
                    result.failed += body.count(b'"to":')
                    result.first_error = result.first_error or repr(exc)
                    continue
                if reply.status_code == 202:
                    data = reply.json()["data"]
                    result.accepted += sum(len(d["messages"]) for d in data)
                    if not result.message_ids:
                        result.message_ids.append(data[0]["messages"][0]["id"])
                else:
                    result.failed += body.count(b'"to":')
                    result.first_error = result.first_error or (
                        f"HTTP {reply.status_code}: {reply.text[:300]}"
                    )

    await asyncio.gather(*(client() for _ in range(max(1, min(concurrency, len(bodies))))))
    result.finished_at = time.monotonic()
    return result


def _child(args: tuple[Any, ...], barrier: Any, out: Any) -> None:
    url, key, start, count, size, batch, shape, concurrency, timeout = args
    bodies = build_batches(start, count, size, batch, shape)
    barrier.wait()
    out.put(asyncio.run(send_batches(url, key, bodies, concurrency, timeout)))


class Generator:
    """``count`` messages from ``procs`` processes (1 = in this process)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        start: int,
        count: int,
        size: int,
        batch: int,
        shape: Shape,
        concurrency: int,
        procs: int,
        timeout: float,
    ) -> None:
        self.url, self.key, self.conc, self.timeout = url, api_key, concurrency, timeout
        self.procs = max(1, procs)
        if self.procs == 1:
            self.bodies = build_batches(start, count, size, batch, shape)
            return
        ctx = multiprocessing.get_context("fork")
        self.barrier, self.out = ctx.Barrier(self.procs + 1), ctx.Queue()
        per = -(-count // self.procs)
        per = -(-per // batch) * batch  # whole batches per process
        self.children = []
        for p in range(self.procs):
            first = start + p * per
            n = max(0, min(per, start + count - first))
            conc = max(1, self.conc // self.procs)
            args = (url, api_key, first, n, size, batch, shape, conc, timeout)
            proc = ctx.Process(target=_child, args=(args, self.barrier, self.out), daemon=True)
            proc.start()
            self.children.append(proc)

    def ready(self) -> None:
        """Block until every child has built its bodies (they start when this returns)."""
        if self.procs > 1:
            self.barrier.wait(timeout=120)

    async def run(self) -> LoadResult:
        if self.procs == 1:
            return await send_batches(self.url, self.key, self.bodies, self.conc, self.timeout)
        parts = [
            await asyncio.to_thread(self.out.get, True, self.timeout * 2) for _ in self.children
        ]
        for proc in self.children:
            await asyncio.to_thread(proc.join, 10)
        total = LoadResult(finished_at=max(p.finished_at for p in parts))
        for part in parts:
            total.accepted += part.accepted
            total.failed += part.failed
            total.first_error = total.first_error or part.first_error
            total.message_ids += part.message_ids
        return total

    def kill(self) -> None:
        for proc in getattr(self, "children", []):
            if proc.is_alive():
                proc.kill()
