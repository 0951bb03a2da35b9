"""Tracking hits benchmark: ``/t/o`` (pixel) and ``/t/c`` (redirect) requests/s against
``postroute serve`` on SQLite, then the events counted in the database (all recorded).

    .venv/bin/python bench/track_hits.py --count 20000 --messages 1000 --connections 32
        [--procs 1] [--runs 3] [--timeout 120] [--keep] [--profile DIR] [--env K=V]

Per run, on 127.0.0.1 only: a fresh data dir, ``postroute init --json`` and ``serve``
with a secret key the benchmark knows (it makes the tokens itself, as preparation does);
one pool pointing at a counting sink; ``--messages`` HTML messages sent and delivered
(so that each has its `sent` event); then ``--count`` pixel requests and ``--count``
link requests spread over those messages (3 links each), from ``--connections``
keep-alive HTTP/1.1 connections in ``--procs`` load processes (a plain asyncio client on
uvloop: httpx would cost more CPU than the server). The rate is requests answered
(200 or 302) over the time from the first request to the last answer; every answer
came after its hit was on disk (the journal's fsync). Then the benchmark waits until the
database holds one `opened` or `clicked` event per request: ``recorded_s`` is how long
after the last answer that took. Bounded: each phase stops after ``--timeout`` s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _postroute import Postroute
from _proc import LOOPBACK, Sink, machine_busy_seconds, machine_steal_seconds

from postroute.preparation.tokens import Tokens

SECRET = "bench-tracking-secret-key"
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0",  # Apple's privacy proxy
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
]
LINKS = 3


def send_messages(pr: Postroute, pool: str, count: int) -> list[str]:
    links = "".join(f'<a href="https://shop.example.com/{i}">link {i}</a> ' for i in range(LINKS))
    ids: list[str] = []
    with httpx.Client(base_url=pr.url, headers=pr.headers, timeout=60) as http:
        patched = http.patch("/v1/account", json={"require_verified_domain": False})
        if patched.status_code != 200:  # bench.test is never verified
            raise SystemExit(f"PATCH /v1/account failed: {patched.status_code} {patched.text}")
        for first in range(0, count, 500):
            messages = [
                {
                    "from": "Bench <sender@bench.test>",
                    "to": f"rcpt{i}@bench.test",
                    "subject": f"Tracking {i}",
                    "html": f"<p>Message {i}: {links}</p>",
                    "pool": pool,
                }
                for i in range(first, min(first + 500, count))
            ]
            reply = http.post("/v1/send/batch", json={"messages": messages})
            if reply.status_code != 202:
                raise SystemExit(f"send failed: {reply.status_code} {reply.text[:300]}")
            ids += [r["messages"][0]["id"] for r in reply.json()["data"]]
    return ids


def paths(kind: str, ids: list[str], count: int) -> list[str]:
    tokens = Tokens([SECRET])
    out = []
    for n in range(count):
        message_id = ids[n % len(ids)]
        if kind == "open":
            out.append("/t/o/" + tokens.open_token(message_id))
        else:
            index = (n // len(ids)) % LINKS
            url = f"https://shop.example.com/{index}"
            out.append("/t/c/" + tokens.click_token(message_id, index, url))
    return out


async def _connection(port: int, todo: list[str], agent: str, answers: list[int]) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    host = f"Host: {LOOPBACK}:{port}\r\nUser-Agent: {agent}\r\n\r\n".encode()
    try:
        for path in todo:
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + host)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            answers.append(status)
    finally:
        writer.close()


def _load(port: int, shares: list[list[str]], start: Any, out: Any) -> None:
    import uvloop

    async def run() -> list[int]:
        answers: list[int] = []
        start.wait()
        await asyncio.gather(
            *(
                _connection(port, todo, AGENTS[i % len(AGENTS)], answers)
                for i, todo in enumerate(shares)
            )
        )
        return answers

    answers = uvloop.run(run())
    out.put((sum(a in (200, 302) for a in answers), len(answers), time.monotonic()))


def hit(port: int, todo: list[str], connections: int, procs: int, timeout: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(procs + 1), ctx.Queue()
    shares = [todo[i::connections] for i in range(connections)]
    workers = [
        ctx.Process(target=_load, args=(port, shares[p::procs], start, out)) for p in range(procs)
    ]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.monotonic()
    done = [out.get(timeout=timeout) for _ in workers]
    for w in workers:
        w.join()
    t_end = max(d[2] for d in done)
    ok, answered = sum(d[0] for d in done), sum(d[1] for d in done)
    return {"ok": ok, "answered": answered, "seconds": round(t_end - t0, 3),
            "rate": round(ok / (t_end - t0), 1), "t_end": t_end}  # fmt: skip


def load_cpu() -> float:
    """CPU seconds of the reaped children: the load generators, once joined."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def events(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM message_events WHERE type IN ('opened', 'clicked')"
        ).fetchone()
    return int(n)


def one_run(args: argparse.Namespace, sink: Sink, run: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="postroute-track-"))
    env = [f"POSTROUTE_SECRET_KEY={SECRET}", *args.env]
    pr = Postroute(workdir, split=False, extra_env=env)
    try:
        pool = pr.create_pool(sink.port, 8)
        base = sink.count()
        ids = send_messages(pr, pool, args.messages)
        deadline = time.monotonic() + args.timeout
        while sink.count() < base + len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the worker records `sent` after the relay's answers
        db = workdir / "data" / "postroute.db"
        result: dict[str, Any] = {"run": run, "messages": len(ids)}
        expected = 0
        for kind in ("open", "click"):
            todo = paths(kind, ids, args.count)
            if args.profile:  # py-spy on serve while it answers (not while it drains)
                pr.start_profiles(args.profile, f"run{run}-{kind}", gil=True, only="serve")
            cpu0, busy0, load0 = pr.cpu(), machine_busy_seconds(), load_cpu()
            steal0 = machine_steal_seconds()
            phase = hit(pr.port, todo, args.connections, args.procs, args.timeout)
            cpu1, busy1, load1 = pr.cpu(), machine_busy_seconds(), load_cpu()
            steal = machine_steal_seconds() - steal0
            pr.stop_profiles()
            expected += phase["ok"]
            window = phase["seconds"]
            serve_cpu = cpu1.get("serve", 0) - cpu0.get("serve", 0)
            phase["serve_cpu_pct"] = round(100 * serve_cpu / window, 1)
            phase["machine_cpu_pct"] = round(100 * (busy1 - busy0) / window, 1)
            phase["load_cpu_pct"] = round(100 * (load1 - load0) / window, 1)
            phase["steal_cpu_pct"] = round(100 * steal / window, 1)
            t_end = phase.pop("t_end")
            while events(db) < expected and time.monotonic() < t_end + args.timeout:
                time.sleep(0.05)
            phase["recorded"] = events(db) - (expected - phase["ok"])
            phase["recorded_s"] = round(time.monotonic() - t_end, 2)
            result[kind] = phase
            pr.check_alive()
        return result
    finally:
        pr.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--count", type=int, default=20_000, help="requests per kind (pixel, link)")
    add("--messages", type=int, default=1_000)
    add("--connections", type=int, default=32)
    add("--procs", type=int, default=1, help="load-generator processes")
    add("--runs", type=int, default=1)
    add("--timeout", type=float, default=120.0)
    add("--keep", action="store_true", help="keep the temp data dirs")
    add("--profile", type=Path, help="py-spy profiles of serve into this dir")
    add("--env", action="append", default=[], metavar="K=V", help="more environment for serve")
    args = parser.parse_args()
    if not 0 < args.count <= 1_000_000 or not 0 < args.messages <= 100_000:
        raise SystemExit("--count must be 1..1,000,000 and --messages 1..100,000")
    sink_dir = Path(tempfile.mkdtemp(prefix="postroute-sink-"))
    sink = Sink(sink_dir)
    results = []
    try:
        for run in range(1, args.runs + 1):
            r = one_run(args, sink, run)
            results.append(r)
            for kind in ("open", "click"):
                p = r[kind]
                print(f"run {run} {kind}: {p['rate']}/s ({p['ok']} in {p['seconds']} s) | "
                      f"recorded {p['recorded']}/{p['ok']} {p['recorded_s']} s after the last "
                      f"answer | cpu serve {p['serve_cpu_pct']}% load {p['load_cpu_pct']}% "
                      f"machine {p['machine_cpu_pct']}% steal {p['steal_cpu_pct']}%",
                      flush=True)  # fmt: skip
            print(json.dumps(r), flush=True)
    finally:
        sink.stop()
        shutil.rmtree(sink_dir, ignore_errors=True)
    if len(results) > 1:
        for kind in ("open", "click"):
            print(f"median {kind}: {statistics.median(r[kind]['rate'] for r in results):.1f}/s")


if __name__ == "__main__":
    main()
