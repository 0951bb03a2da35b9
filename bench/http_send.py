"""HTTP send benchmark: Postroute on SQLite → SMTP pool → counting sink, all on 127.0.0.1.

    .venv/bin/python bench/http_send.py --count 20000 --size 2048 [--batch 500]
        [--concurrency 4] [--procs 1] [--split | --queue-first] [--max-connections 8]
        [--runs 3] [--dkim] [--profile DIR]

Per run: a fresh data dir, ``postroute init --json``, ``postroute serve`` (or ``api`` +
``worker`` with ``--split``), one pool pointing at the sink, ``--warmup`` messages, then
``--count`` messages through ``POST /v1/send/batch``. ``--queue-first`` (split) stops the
worker while the messages are accepted, then starts it: each path measured alone.
``--dkim``: the From domain is verified first (a DNS server of the benchmark's own), so
every message is DKIM-signed (RSA-2048) and leaves with a VERP envelope sender; without
it the account may send from an unverified domain, unsigned.
Prints a summary line and a JSON line per run (and the medians). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _domain import SigningDomain
from _load import Generator, LoadResult, Shape
from _postroute import Postroute
from _proc import Sink, cpu_seconds, machine_busy_seconds, machine_steal_seconds
from _report import Phase, medians, result, summary

POLL = 0.01  # seconds between looks at the sink's counter


def own_cpu() -> float:
    """CPU seconds of this script and of its reaped children (the load generators)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Meter:
    """CPU seconds over a window: Postroute per process, machine, sink, this script."""

    pr: Postroute
    sink: Sink
    start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = self.now()

    def now(self) -> dict[str, float]:
        cpu = {f"pr:{k}": v for k, v in self.pr.cpu().items()}
        return cpu | {"machine": machine_busy_seconds(), "sink": cpu_seconds(self.sink.pid),
                      "bench": own_cpu(), "steal": machine_steal_seconds()}  # fmt: skip

    def since_start(self) -> dict[str, float]:
        end = self.now()
        return {k: end.get(k, v) - v for k, v in self.start.items()} | {
            k: v
            for k, v in end.items()
            if k not in self.start  # a process started meanwhile
        }


async def send(gen: Generator, pr: Postroute, sink: Sink, count: int, wait_sink: bool,
               deadline: float) -> Phase:  # fmt: skip
    """Start the load at t0; note when all 202s arrived and (``wait_sink``) when the sink had
    counted every accepted message."""
    target = sink.count() + count
    meter = Meter(pr, sink)
    t0 = time.monotonic()
    load = asyncio.create_task(gen.run())
    cpu_acc: dict[str, float] = {}
    t_end, cpu = None, {}
    while time.monotonic() < deadline:
        if load.done() and not cpu_acc:
            cpu_acc = meter.since_start()
            if load.exception() is not None:
                break
            target -= count - load.result().accepted  # failed requests: nothing to wait for
            if not wait_sink:
                t_end, cpu = load.result().finished_at, cpu_acc
        if t_end is None and wait_sink and sink.count() >= target:
            t_end, cpu = time.monotonic(), meter.since_start()
        if t_end is not None and load.done():
            break
        await asyncio.sleep(POLL)
    cpu = cpu or meter.since_start()
    load.cancel()
    try:
        result = await load
    except asyncio.CancelledError:
        result = LoadResult(first_error="load generator did not finish in time")
    return Phase(t0, t_end, cpu, result.accepted, result, cpu_acc)


def drain(pr: Postroute, sink: Sink, base: int, count: int, deadline: float,
          on_first: Callable[[], None]) -> Phase:  # fmt: skip
    """Time from the sink's first message past ``base`` until it has ``count`` more."""
    while (first := sink.count()) == base and time.monotonic() < deadline:
        time.sleep(POLL / 10)
    meter, t0 = Meter(pr, sink), time.monotonic()
    on_first()
    while time.monotonic() < deadline:
        if sink.count() >= base + count:
            return Phase(t0, time.monotonic(), meter.since_start(), base + count - first)
        time.sleep(POLL)
    return Phase(t0, None, meter.since_start(), base + count - first)


def deliver(pr: Postroute, sink: Sink, args: argparse.Namespace, pool: str, start: int,
            count: int, wait_sink: bool = True) -> Phase:  # fmt: skip
    """Send ``count`` messages (numbered from ``start``); wait for the sink to count them."""
    shape = Shape(pool, args.html_links, args.track)
    gen = Generator(pr.url, pr.api_key, start, count, args.size, args.batch, shape,
                    args.concurrency, args.procs, args.timeout)  # fmt: skip
    try:
        gen.ready()
        deadline = time.monotonic() + args.timeout
        return asyncio.run(send(gen, pr, sink, count, wait_sink, deadline))
    finally:
        gen.kill()


def one_run(args: argparse.Namespace, sink: Sink, run: int,
            signing: SigningDomain | None) -> dict[str, Any]:  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="postroute-bench-"))
    pr = None
    try:
        pr = Postroute(workdir, args.split, args.env, signing, args.extra_workers)
        pool = pr.create_pool(sink.port, args.max_connections)
        print(f"# run {run}: {pr.add_domain()}", file=sys.stderr, flush=True)
        if args.warmup and deliver(pr, sink, args, pool, 10**7, args.warmup).t_end is None:
            pr.check_alive()
            raise SystemExit("warm-up not delivered within --timeout")
        if args.queue_first:
            pr.stop_part("worker")
        if args.profile:
            pr.start_profiles(Path(args.profile), f"run{run}", args.profile_gil)
        m = deliver(pr, sink, args, pool, 0, args.count, wait_sink=not args.queue_first)
        d = m
        if args.queue_first and m.count:
            pr.stop_profiles()
            base = sink.count()
            pr.start_part("worker")

            def profile() -> None:  # from the first delivery on: not the worker's start-up
                if args.profile:
                    pr.start_profiles(Path(args.profile), f"run{run}", args.profile_gil, "worker")

            d = drain(pr, sink, base, m.count, time.monotonic() + args.timeout, profile)
        pr.stop_profiles()
        pr.check_alive()
        load = m.load or LoadResult()
        setup = {
            "sink": sink.kind,
            "dkim": signing is not None,
            "extra_workers": args.extra_workers,
            "html_links": args.html_links,
            "track": args.track,
            "mime_bytes": pr.mime_bytes(load.message_ids[0]) if load.message_ids else None,
            "peak_rss_mb": pr.peak_rss(),
        }
        return result(args, run, setup, m, d)
    finally:
        if pr is not None:
            pr.stop()
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = ap.add_argument
    add("--count", type=int, default=20000, help="messages per run (1..1e6)")
    add("--size", type=int, default=2048, help="target MIME size in bytes")
    add("--batch", type=int, default=500, help="messages per request (1..500)")
    add("--concurrency", type=int, default=4, help="concurrent HTTP clients (in total)")
    add("--procs", type=int, default=1, help="load-generator processes")
    add("--split", action="store_true", help="run `postroute api` + `postroute worker`")
    add("--queue-first", action="store_true",
        help="split, with the worker stopped until every message is accepted")  # fmt: skip
    add("--extra-workers", type=int, default=0, metavar="N",
        help="N more `postroute worker` processes beside serve (or api + worker)")  # fmt: skip
    add("--max-connections", type=int, default=8, help="the pool's max_connections")
    add("--runs", type=int, default=1, help="runs, each on a fresh Postroute")
    add("--warmup", type=int, default=500, help="messages delivered before measuring")
    add("--timeout", type=float, default=300.0, help="bound in seconds per phase of a run")
    add("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    add("--env", action="append", default=[], metavar="POSTROUTE_X=V",
        help="extra environment for Postroute (repeatable)")  # fmt: skip
    add("--dkim", action="store_true",
        help="a verified From domain: DKIM-signed (RSA-2048), VERP return path")  # fmt: skip
    add("--html-links", type=int, default=0, metavar="N",
        help="an HTML part with N links besides the text (one content per message)")  # fmt: skip
    add("--track", action=argparse.BooleanOptionalAction, default=None,
        help="opens, clicks and unsubscribe on (--track) or off (--no-track) per message; "
        "neither: the fields are left out (the account's defaults)")  # fmt: skip
    add("--profile", metavar="DIR", help="py-spy record each Postroute process (collapsed)")
    add("--profile-gil", action="store_true", help="profile only samples holding the GIL")
    add("--keep", action="store_true", help="keep the data dirs and logs")
    args = ap.parse_args()
    args.split = args.split or args.queue_first
    if not 1 <= args.batch <= 500 or not 1 <= args.count <= 1_000_000:
        ap.error("--batch must be 1..500 and --count 1..1000000")
    if args.extra_workers and args.queue_first:
        ap.error("--extra-workers would deliver while --queue-first holds the worker back")
    if not 0 <= args.html_links <= 1000:
        ap.error("--html-links must be 0..1000")
    if any("=" not in e for e in args.env):
        ap.error("--env takes KEY=VALUE")
    return args


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as for Ctrl-C
    sink_dir = Path(tempfile.mkdtemp(prefix="postroute-sink-"))
    sink = Sink(sink_dir, args.sink)
    signing = SigningDomain() if args.dkim else None
    results = []
    try:
        for run in range(1, args.runs + 1):
            r = one_run(args, sink, run, signing)
            results.append(r)
            print(summary(r), flush=True)
            print(json.dumps(r), flush=True)
    finally:
        sink.stop()
        if signing is not None:
            signing.stop()
        shutil.rmtree(sink_dir, ignore_errors=True)
    if len(results) > 1:
        print(medians(results), flush=True)


if __name__ == "__main__":
    main()
