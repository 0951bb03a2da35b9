"""SMTP ingress benchmark: smtp-source → Postroute SMTP → SQLite queue → pool → smtp-sink.

    .venv/bin/python bench/smtp_ingress.py --persist --count 10000 --size 2048 --runs 3
        [--split] [--with-postfix [--interleave]] [--max-connections 8] [--env POSTROUTE_X=V]
        [--dkim] [--profile DIR [--profile-gil]] [--print-only]
    .venv/bin/python bench/smtp_ingress.py --smtp-only --persist --count 10000 --runs 3

Prepares a fresh Postroute data dir (SQLite): ``postroute init --json``, an IP credential
for 127.0.0.1/32 (smtp-source submits without AUTH or TLS, as from an application server
on ``mynetworks``), one pool (``encryption none``, no credentials) towards
127.0.0.1:SINK_PORT. Then it drives ``../shared/bench/smtp_anchor.sh project``: the anchor
starts ``smtp-sink -c`` on SINK_PORT, starts Postroute (``postroute serve``, or with
``--split`` ``postroute smtp`` + ``postroute worker`` on the same SQLite file), sends
``--warmup`` then ``--count`` messages per run with smtp-source (20 sessions, ``-d`` with
``--persist``) to the STARTTLS listener, and times the last 250 (accepted/s) and the
sink's count reaching N (delivered/s). ``--with-postfix`` first measures Postfix
(``smtp_anchor.sh postfix``, the same options) in the same session; with ``--interleave``
it alternates one Postfix run and one Postroute run instead (each after the machine is
idle again), so that both sides of each ratio meet the same host (steal moves within
minutes), and prints the ratio per pair. A
table of the medians ends the output, then the CPU time of each Postroute process per
measured message (``smtp``, ``worker``, ``serve``: from the end of the warm-up to the
last delivery).
``--print-only`` prints the environment and the anchor command instead.

The account may send from an unverified domain (unsigned, the client's ``MAIL FROM`` kept),
unless ``--dkim``: then smtp-source's From domain is added with ``postroute domains add``,
its records are published on a DNS server of the benchmark's own (``POSTROUTE_DNS_RESOLVERS``
for every Postroute process) and verified with ``postroute domains verify``, so each message
is DKIM-signed (RSA-2048) and relayed with a VERP envelope sender (see bench/_domain.py).

``--smtp-only`` measures the SMTP process alone, without the anchor: ``postroute smtp``
and no worker (messages stay queued), smtp-source as above, so the process is
saturated and nothing else writes to SQLite. It prints per run accepted/s, the
process's CPU ms per message and its CPU % of one core (``--profile`` works too).

smtp-source sends no Subject unless asked, and Postroute refuses a message without one, so
the load command is the anchor's own smtp-source command plus ``-S``. Postroute's
per-connection limits (100 messages per connection, 600 connections per IP and minute)
would cut smtp-source off, so they are raised (``--env`` overrides). See
docs/performance-smtp.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _domain import FROM_DOMAIN, SigningDomain, allow_unverified
from _postroute import POSTROUTE, STARTUP_TIMEOUT, postroute_env, run_cli
from _proc import CLK_TCK, LOOPBACK, Child, free_port, machine_busy_seconds, wait_port

ROOT = Path(__file__).resolve().parent.parent
ANCHOR = ROOT.parent / "shared" / "bench" / "smtp_anchor.sh"
SUBJECT = "Postroute SMTP benchmark"
RAISED_LIMITS = [
    "POSTROUTE_SMTP_MAX_MESSAGES_PER_CONNECTION=1000000",
    "POSTROUTE_SMTP_MAX_CONNECTIONS_PER_IP_PER_MINUTE=1000000",
]


def prepare(args: argparse.Namespace, workdir: Path, signing: SigningDomain | None
            ) -> dict[str, str]:  # fmt: skip
    """Data dir, account + key, IP credential, pool, and the From domain's rule (verified
    with ``signing``, else not required). Returns Postroute's environment."""
    dns = [f"{k}={v}" for k, v in signing.env.items()] if signing else []
    extra = [*RAISED_LIMITS, f"POSTROUTE_SMTP_BIND={LOOPBACK}:{args.port}", *dns, *args.env]
    env = postroute_env(workdir / "data", free_port(), extra)
    out = run_cli(env, workdir, "init", "--json", "--account-name", args.account)
    json.loads(out.strip().splitlines()[-1])  # the key is not needed: no AUTH from 127.0.0.1
    if signing:
        print("# " + signing.add_over_cli(POSTROUTE, env, workdir, args.account), flush=True)
    else:
        allow_unverified(POSTROUTE, env, workdir, args.account)
    run_cli(env, workdir, "ip-credentials", "add", f"{LOOPBACK}/32", "--account", args.account,
            "--description", "smtp-source")  # fmt: skip
    run_cli(env, workdir, "pools", "add", "--account", args.account, "--name", "bench-sink",
            "--host", LOOPBACK, "--port", str(args.sink_port), "--encryption", "none",
            "--max-connections", str(args.max_connections), "--default")  # fmt: skip
    return env


def start_cmd(split: bool) -> str:
    exe = shlex.quote(str(POSTROUTE))
    if split:  # two processes on one SQLite file; the anchor stops the whole group
        return f"{exe} smtp & {exe} worker & wait"
    return f"exec {exe} serve"


def load_cmd(args: argparse.Namespace) -> str:
    """The anchor's smtp-source command (lib/anchor.py) with a Subject header."""
    cmd = ["smtp-source", "-s", "{sessions}", "-m", "{count}", "-l", "{size}", "-M",
           FROM_DOMAIN, "-f", f"sender@{FROM_DOMAIN}", "-t", "rcpt@bench.test", "-S",
           shlex.quote(SUBJECT)]  # fmt: skip
    return " ".join([*cmd, *(["-d"] if args.persist else []), "{host}:{port}"])


def anchor_argv(args: argparse.Namespace, scenario: str) -> list[str]:
    argv = [str(args.anchor), scenario, "--sizes", str(args.size), "--count", str(args.count)]
    argv += ["--runs", str(args.runs), "--sessions", str(args.sessions)]
    argv += ["--warmup", str(args.warmup), "--timeout", str(args.timeout)]
    argv += ["--sink-port", str(args.sink_port)]
    return argv + (["--persist"] if args.persist else [])


def others_running(pattern: str) -> bool:
    """Whether a process other than this benchmark (whose own argv names the pattern) and
    its ``timeout`` wrapper matches ``pgrep -f PATTERN``."""
    found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False)
    mine = Path(__file__).name
    return any(mine not in line for line in found.stdout.splitlines())


def wait_idle(patterns: list[str], limit: float = 1200.0, every: float = 15.0) -> None:
    """Wait (bounded) until no process matches any of ``patterns`` (another benchmark)."""
    end = time.monotonic() + limit
    for pattern in patterns:
        while others_running(pattern):
            if time.monotonic() > end:
                print(f"# still running after {limit:.0f} s: {pattern}; going on", flush=True)
                return
            print(f"# waiting for {pattern!r} to finish", flush=True)
            time.sleep(every)


# -- profiling -------------------------------------------------------------------------------


def descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                data = (entry / "stat").read_text()
                ppid = int(data[data.rfind(")") + 2 :].split()[1])
                kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def postroute_pids(root: int) -> dict[str, int]:
    """``{part: pid}`` of the Postroute processes below ``root`` (serve, smtp, worker)."""
    found = {}
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            parts = [a.decode() for a in argv if a in (b"serve", b"smtp", b"worker")]
            if parts and any(a.endswith(b"/postroute") or a == b"postroute" for a in argv):
                found[parts[0] if parts[0] not in found else f"{parts[0]}-{pid}"] = pid
    return found


def sink_count(path: Path) -> int:
    try:
        tail = path.read_bytes()[-400:].decode("ascii", "replace")
    except OSError:
        return 0
    found = re.findall(r"mesg=(\d+)", tail)  # smtp-sink -c separates counts with \r
    return int(found[-1]) if found else 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (its threads included), in clock ticks."""
    with contextlib.suppress(OSError):
        data = Path(f"/proc/{pid}/stat").read_text()
        fields = data[data.rfind(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])
    return 0


class Watcher:
    """Per Postroute process, from the end of the warm-up to the last delivery: its CPU
    time (ms per measured message), and py-spy when ``--profile`` is given."""

    def __init__(self, args: argparse.Namespace, logdir: Path) -> None:
        self.args, self.sink_out = args, logdir / f"sink-{args.sink_port}.out"
        self.children: list[Child] = []
        self.pids: dict[str, int] = {}
        self.ticks: dict[str, int] = {}
        self.latest: dict[str, int] = {}
        self.started = self.done = False
        self.report = ""

    def poll(self, anchor: subprocess.Popen[bytes]) -> None:
        args = self.args
        if self.done:
            return
        count = sink_count(self.sink_out)
        if not self.started and count >= args.warmup:
            self.started = True
            self.pids = postroute_pids(anchor.pid)
            self.ticks = {part: cpu_ticks(pid) for part, pid in self.pids.items()}
            self.latest = dict(self.ticks)
            if args.profile:
                self._spy()
        elif self.started:
            # the last reading before the anchor stops Postroute (it does at the last count)
            for part, pid in self.pids.items():
                self.latest[part] = max(self.latest[part], cpu_ticks(pid))
            if count >= args.warmup + args.runs * args.count:
                self.finish()

    def finish(self) -> None:
        if self.started and not self.done:
            n = self.args.runs * self.args.count
            per = {part: (self.latest[part] - self.ticks[part]) * 1000 / CLK_TCK / n
                   for part in self.pids}  # fmt: skip
            figures = ", ".join(f"{part} {ms:.2f}" for part, ms in sorted(per.items()))
            self.report = f"# CPU ms/msg per process over {n} messages: {figures}"
            print(self.report, flush=True)
        self.stop()

    def _spy(self) -> None:
        args = self.args
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        outdir = Path(args.profile)
        outdir.mkdir(parents=True, exist_ok=True)
        for part, pid in self.pids.items():
            out = outdir / f"{args.name}-{part}.collapsed"
            cmd = [spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
            cmd += ["--output", str(out), "--nonblocking"]
            cmd += ["--gil"] if args.profile_gil else []
            self.children.append(Child(f"py-spy-{part}", cmd, outdir / f"{out.name}.log"))

    def stop(self) -> None:
        self.done = True
        for c in self.children:
            if c.alive():
                os.kill(c.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
        for c in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(60)
            c.stop()


# -- the SMTP process alone ----------------------------------------------------------------


def run_smtp_only(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> int:
    """``postroute smtp`` alone, saturated by smtp-source; CPU per accepted message."""
    smtp = Child("smtp", [str(POSTROUTE), "smtp"], workdir / "smtp.log", env, workdir)
    spies: list[Child] = []
    try:
        if not wait_port(args.port, STARTUP_TIMEOUT, smtp.proc):
            raise SystemExit(f"postroute smtp did not listen:\n{smtp.tail()}")
        source = load_cmd(args).replace("{host}:{port}", f"{LOOPBACK}:{args.port}")

        def send(count: int) -> int:
            cmd = source.format(sessions=args.sessions, count=count, size=args.size)
            return subprocess.run(cmd, shell=True, env=env, check=False,
                                  stdout=subprocess.DEVNULL).returncode  # fmt: skip

        rc = send(args.warmup)
        if args.profile:
            watcher = Watcher(args, workdir)
            watcher.pids = {"smtp": smtp.pid}
            watcher._spy()
            spies = watcher.children
        for run in range(1, args.runs + 1):
            ticks, start = cpu_ticks(smtp.pid), time.perf_counter()
            rc |= send(args.count)
            wall, cpu = time.perf_counter() - start, (cpu_ticks(smtp.pid) - ticks) / CLK_TCK
            failed = f", smtp-source exited with {rc}" if rc else ""
            print(f"smtp-only run {run}: {args.count / wall:.0f} msg/s accepted, CPU "
                  f"{1000 * cpu / args.count:.3f} ms/msg, {100 * cpu / wall:.0f}% of a core"
                  f"{failed}", flush=True)  # fmt: skip
        return rc
    finally:
        for spy in spies:
            if spy.alive():
                os.kill(spy.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.proc.wait(60)
            spy.stop()
        smtp.stop()


# -- running the anchor ----------------------------------------------------------------------


def run_anchor(args: argparse.Namespace, argv: list[str], env: dict[str, str],
               logdir: Path) -> int:  # fmt: skip
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
    watcher = Watcher(args, logdir)
    # an earlier run's count would start the watch before Postroute is up (no pids found)
    watcher.sink_out.unlink(missing_ok=True)
    anchor = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        while anchor.poll() is None:
            if "project" in argv:
                watcher.poll(anchor)
            time.sleep(0.02 if watcher.started else 0.2)
    finally:
        watcher.finish()
        if watcher.report:
            args.cpu_reports.append(watcher.report)
        if anchor.poll() is None:  # interrupted: the anchor stops what it started on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(anchor.pid, signal.SIGTERM)
            anchor.wait(60)
    return anchor.returncode


def interleaved(args: argparse.Namespace, env: dict[str, str], logdir: Path) -> int:
    """``--runs`` rounds of one Postfix run then one Postroute run: both sides of each
    ratio see the same host (its steal moves within minutes)."""
    one = argparse.Namespace(**{**vars(args), "runs": 1})  # shares cpu_reports
    rc = 0
    for _ in range(args.runs):
        wait_idle(args.wait_idle)
        rc |= run_anchor(one, anchor_argv(one, "postfix"), env, logdir)
        settle()  # Postfix goes on working (queue files, writeback) after its last delivery
        project = [*anchor_argv(one, "project"), "--label", args.label, "--load-cmd",
                   load_cmd(args)]  # fmt: skip
        rc |= run_anchor(one, project, env, logdir)
        settle()
    return rc


def settle(limit: float = 60.0, busy: float = 0.15) -> None:
    """Wait (at most ``limit`` s) until the machine is idle: under ``busy`` of a core for
    two seconds in a row."""
    end, quiet = time.monotonic() + limit, 0
    while time.monotonic() < end and quiet < 2:
        before = machine_busy_seconds()
        time.sleep(1)
        quiet = quiet + 1 if machine_busy_seconds() - before < busy else 0
    if quiet < 2:
        print(f"# the machine was still busy after {limit:.0f} s; going on", flush=True)


def pairs(out: Path, since: str) -> str:
    """Postroute's delivered/s against Postfix's, run by run in order (with
    ``--interleave``, each Postroute run against the Postfix run just before it)."""
    theirs: list[float] = []
    ours: list[float] = []
    with contextlib.suppress(OSError):
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if r.get("summary") or r.get("ts", since) < since or not r.get("deliver_rate"):
                continue
            (theirs if str(r["label"]).startswith("postfix") else ours).append(r["deliver_rate"])
    ratios = [o / t for t, o in zip(theirs, ours) if t]  # noqa: B905 - as many as finished
    if not ratios:
        return "# no pair of runs to compare"
    each = ", ".join(f"{o:.0f}/{t:.0f} = {o / t:.2f}x" for t, o in zip(theirs, ours))  # noqa: B905
    median = statistics.median(ratios)
    return f"# delivered/s, Postroute/Postfix per run: {each}; median {median:.2f}x"


def table(out: Path, since: str) -> str:
    """Markdown table of the anchor's medians written since ``since`` (its ``ts`` format)."""
    summaries: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if r.get("ts", since) >= since:
                (summaries if r.get("summary") else runs).append(r)
    lines = [
        "| path | size | ok | accepted/s (median) | delivered/s (median) | delivered/s per run"
        " | server CPU ms/msg | CPU % machine / server / smtp-source / sink |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    used: dict[tuple[str, int], int] = {}  # interleaved: one summary per run of a label
    for s in summaries:
        key = (s["label"], s["size"])
        mine = [r for r in runs if (r["label"], r["size"]) == key]
        start = used.get(key, 0)
        mine = mine[start : start + s["runs"]]
        used[key] = start + s["runs"]
        per = ", ".join(str(r["deliver_rate"]) for r in mine)
        # the server: the project's process tree; for Postfix, what is left of the machine
        server = [r["cpu_subject_pct"] if r["cpu_subject_pct"] is not None else r["cpu_rest_pct"]
                  for r in mine]  # fmt: skip
        ms = [10 * pct * r["wall_s"] / r["count"] for pct, r in zip(server, mine, strict=True)]
        ms_med = f"{statistics.median(ms):.2f}" if ms else "?"
        server_med = s["cpu_subject_med"] if s["cpu_subject_med"] is not None else s["cpu_rest_med"]
        cpu = f"{s['cpu_machine_med']} / {server_med} / {s['cpu_load_med']} / {s['cpu_sink_med']}"
        lines.append(
            f"| {s['label']} | {s['size']} | {s['ok_runs']}/{s['runs']} | {s['accept_rate_med']}"
            f" | {s['deliver_rate_med']} | {per} | {ms_med} | {cpu} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = ap.add_argument
    add("--count", type=int, default=10000, help="messages per run (1..1e6)")
    add("--size", type=int, default=2048, help="smtp-source -l: body bytes")
    add("--runs", type=int, default=3)
    add("--sessions", type=int, default=20, help="smtp-source -s")
    add("--persist", action="store_true", help="smtp-source -d: reuse each session")
    add("--warmup", type=int, default=500)
    add("--timeout", type=float, default=300.0, help="bound in seconds per run")
    add("--split", action="store_true", help="`postroute smtp` + `postroute worker`")
    add("--smtp-only", action="store_true", help="`postroute smtp` alone, no anchor or worker")
    add("--with-postfix", action="store_true", help="measure Postfix first, same options")
    add("--interleave", action="store_true",
        help="with --with-postfix: alternate one Postfix run and one Postroute run")  # fmt: skip
    add("--max-connections", type=int, default=8, help="the pool's max_connections")
    add("--sink-port", type=int, default=int(os.environ.get("SINK_PORT", 2526)))
    add("--port", type=int, default=0, help="Postroute's STARTTLS listener (default: free)")
    add("--account", default="bench")
    add("--env", action="append", default=[], metavar="KEY=V",
        help="extra environment for Postroute (repeatable), e.g. PYTHONPATH=DIR")  # fmt: skip
    add("--anchor", type=Path, default=ANCHOR, help="path of smtp_anchor.sh")
    add("--out", type=Path, help="results JSONL (default: in the work dir)")
    add("--label", help="label of the Postroute rows (default: postroute-serve|-split)")
    add("--wait-idle", action="append", default=[], metavar="PATTERN",
        help="wait (<= 20 min) before measuring while `pgrep -f PATTERN` matches")  # fmt: skip
    add("--dkim", action="store_true",
        help="a verified From domain: DKIM-signed (RSA-2048), VERP return path")  # fmt: skip
    add("--profile", metavar="DIR", help="py-spy each Postroute process after the warm-up")
    add("--profile-gil", action="store_true", help="only samples holding the GIL")
    add("--print-only", action="store_true", help="prepare, print the commands, do not run")
    add("--keep", action="store_true", help="keep the work dir (data dir, logs)")
    args = ap.parse_args()
    if not 1 <= args.count <= 1_000_000 or not 1 <= args.runs <= 20:
        ap.error("--count must be 1..1000000 and --runs 1..20")
    if any("=" not in e for e in args.env):
        ap.error("--env takes KEY=VALUE")
    if not args.anchor.exists():
        ap.error(f"{args.anchor} not found")
    if not shutil.which("smtp-source") and not Path("/usr/sbin/smtp-source").exists():
        ap.error(f"smtp-source not found: run `{args.anchor} setup` (root)")
    args.port = args.port or free_port()
    args.cpu_reports = []
    args.name = "smtp-only" if args.smtp_only else "split" if args.split else "serve"
    args.label = args.label or f"postroute-{args.name}" + ("-dkim" if args.dkim else "")
    args.label += f" [smtp-source -s{args.sessions} {'-d' if args.persist else 'conn/msg'}]"
    return args


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="postroute-smtp-bench-"))
    logdir = workdir / "logs"
    out = args.out or workdir / "results.jsonl"
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    signing = SigningDomain() if args.dkim else None  # answers for the whole invocation
    try:
        env = prepare(args, workdir, signing)
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
        env.update(PROJECT_PORT=str(args.port), PROJECT_START_CMD=start_cmd(args.split),
                   SINK_PORT=str(args.sink_port), BENCH_OUT=str(out),
                   BENCH_LOGDIR=str(logdir))  # fmt: skip
        project = [*anchor_argv(args, "project"), "--label", args.label, "--load-cmd",
                   load_cmd(args)]  # fmt: skip
        if args.print_only:
            keep = sorted(k for k in env if k.startswith(("POSTROUTE_", "PROJECT_", "BENCH_"))
                          or k in ("SINK_PORT", "PYTHONPATH", "LOG_LEVEL"))  # fmt: skip
            print(f"# data dir prepared in {workdir} (kept)")
            print(" ".join(f"{k}={shlex.quote(env[k])}" for k in keep) + " \\")
            print("  " + " ".join(shlex.quote(a) for a in project))
            args.keep = True
            return
        if args.smtp_only:
            wait_idle(args.wait_idle)
            if run_smtp_only(args, env, workdir):
                args.keep = True
            return
        rc = 0
        if args.with_postfix and args.interleave:
            rc |= interleaved(args, env, logdir)
        else:
            if args.with_postfix:
                wait_idle(args.wait_idle)
                rc |= run_anchor(args, anchor_argv(args, "postfix"), env, logdir)
            wait_idle(args.wait_idle)
            rc |= run_anchor(args, project, env, logdir)
        print(table(out, since), flush=True)
        if args.with_postfix:
            print(pairs(out, since), flush=True)
        print("\n".join(args.cpu_reports), flush=True)
        if rc:
            print(f"# the anchor exited with {rc}; logs in {logdir}", flush=True)
            args.keep = True
    finally:
        if signing is not None:
            signing.stop()
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
