"""What a run measured (phases) and how it is printed: one summary line, one JSON line."""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from _load import LoadResult


@dataclass
class Phase:
    t0: float
    t_end: float | None  # None: not over within --timeout
    cpu: dict[str, float]  # CPU seconds t0..t_end: "pr:<process>", machine, sink, bench
    count: int = 0  # messages this phase's rate counts
    load: LoadResult | None = None
    cpu_accept: dict[str, float] = field(default_factory=dict)  # t0..the last 202

    @property
    def seconds(self) -> float | None:
        return None if self.t_end is None else self.t_end - self.t0


def result(
    args: argparse.Namespace, run: int, setup: dict[str, Any], send: Phase, delivery: Phase
) -> dict[str, Any]:
    """``send``: the sending phase; ``delivery``: the same one, or the drain (queue-first)."""
    load = send.load or LoadResult()
    accept_s = load.finished_at - send.t0 if load.finished_at else None
    if delivery is send:
        deliver_s, cpu = send.seconds, send.cpu
        wall = send.seconds or args.timeout
    else:
        deliver_s = delivery.seconds
        cpu = {k: send.cpu.get(k, 0) + delivery.cpu.get(k, 0) for k in send.cpu | delivery.cpu}
        wall = (send.seconds or args.timeout) + (delivery.seconds or args.timeout)
    pr_cpu = {k[3:]: v for k, v in cpu.items() if k.startswith("pr:")}
    pct = {k: round(100 * v / wall) for k, v in cpu.items() if not k.startswith("pr:")}
    pct["postroute"] = round(100 * sum(pr_cpu.values()) / wall)
    pct["other"] = pct["machine"] - pct["postroute"] - pct["sink"] - pct["bench"]
    mode = "queue-first" if args.queue_first else "split" if args.split else "serve"
    return {
        "run": run,
        "mode": mode,
        "count": args.count,
        "size": args.size,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "procs": args.procs,
        "max_connections": args.max_connections,
        **setup,
        "accepted": load.accepted,
        "failed": load.failed,
        "error": load.first_error or None,
        "accept_s": _r(accept_s, 3),
        "accept_rate": _r(accept_s and load.accepted / accept_s, 0),
        "delivered": delivery.count if delivery.t_end is not None else None,
        "deliver_s": _r(deliver_s, 3),
        "deliver_rate": _r(deliver_s and delivery.count / deliver_s, 0),
        "cpu_s": {k: _r(v, 2) for k, v in pr_cpu.items()},
        "cpu_accept_s": {k[3:]: _r(v, 2) for k, v in send.cpu_accept.items() if k[:3] == "pr:"},
        "cpu_ms_per_msg": _r(1000 * sum(pr_cpu.values()) / max(load.accepted, 1), 3),
        **{f"{k}_cpu_pct": v for k, v in pct.items()},
    }


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summary(r: dict[str, Any]) -> str:
    cpu = " ".join(f"{k}={v}s" for k, v in r["cpu_s"].items())
    rss = " ".join(f"{k}={v}MB" for k, v in r["peak_rss_mb"].items())
    html = f" html={r['html_links']}" if r.get("html_links") else ""
    track = {None: "", True: " track", False: " no-track"}[r.get("track")]
    track += f" +{r['extra_workers']} workers" if r.get("extra_workers") else ""
    return (
        f"run {r['run']} {r['mode']}{' dkim' if r.get('dkim') else ''}{html}{track}"
        f" N={r['count']}"
        f" size={r['size']} (mime {r['mime_bytes']} B)"
        f" | accepted {r['accept_rate']}/s in {r['accept_s']} s"
        f" | delivered {r['deliver_rate']}/s in {r['deliver_s']} s"
        f" | cpu {cpu} ({r['cpu_ms_per_msg']} ms/msg) | peak rss {rss}"
        f" | machine {r['machine_cpu_pct']}% = postroute {r['postroute_cpu_pct']}%"
        f" + sink {r['sink_cpu_pct']}% + bench {r['bench_cpu_pct']}%"
        f" + other {r['other_cpu_pct']}% | steal {r.get('steal_cpu_pct', 0)}%"
        + (f" | ERROR {r['error']}" if r["error"] else "")
    )


def medians(results: list[dict[str, Any]]) -> str:
    keys = ("accept_rate", "deliver_rate", "cpu_ms_per_msg")
    med = {
        k: statistics.median(r[k] for r in results if r[k] is not None)
        for k in keys
        if any(r[k] is not None for r in results)
    }
    line = f"median of {len(results)}: " + " ".join(f"{k}={v:g}" for k, v in med.items())
    return line + "\n" + json.dumps({"median": med, "runs": len(results)})
