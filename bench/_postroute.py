"""Postroute under test: a temp data dir, ``postroute init --json``, then ``serve`` (or
``api`` + ``worker``), one SMTP pool towards the sink, and optional py-spy profiles."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from _domain import SigningDomain, allow_unverified
from _proc import LOOPBACK, Child, child_pids, cpu_seconds, free_port, peak_rss_mb, wait_port

POSTROUTE = Path(sys.executable).with_name("postroute")
STARTUP_TIMEOUT = 60.0
INIT_ACCOUNT = "default"  # the account `postroute init` makes without --account-name


def postroute_env(data_dir: Path, http_port: int, extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROUTE_")}
    env.update(
        POSTROUTE_DATA_DIR=str(data_dir),  # SQLite: <data_dir>/postroute.db
        POSTROUTE_HTTP_BIND=f"{LOOPBACK}:{http_port}",
        POSTROUTE_PUBLIC_URL=f"http://{LOOPBACK}:{http_port}",
        POSTROUTE_SMTP_BIND=f"{LOOPBACK}:{free_port()}",
        POSTROUTE_SMTPS_BIND=f"{LOOPBACK}:{free_port()}",
        POSTROUTE_LOG_LEVEL="WARNING",
        LOG_LEVEL="WARNING",
    )
    env.update(item.split("=", 1) for item in extra)
    return env


def run_cli(env: dict[str, str], workdir: Path, *argv: str) -> str:
    """``postroute <argv>`` to completion; its stdout, or exit with its output."""
    done = subprocess.run(
        [str(POSTROUTE), *argv],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"postroute {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


class Postroute:
    """``postroute init`` + ``serve`` (or ``api`` and ``worker``) in ``workdir``. Without
    ``signing`` the account may send from any domain (unsigned, as before sending domains);
    with it, it keeps the verified-domain rule and :meth:`add_domain` verifies its domain."""

    def __init__(
        self, workdir: Path, split: bool, extra_env: list[str],
        signing: SigningDomain | None = None, extra_workers: int = 0,
    ) -> None:  # fmt: skip
        if not POSTROUTE.exists():
            raise SystemExit(f"{POSTROUTE} not found: run with the project's venv python")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        dns = [f"{k}={v}" for k, v in signing.env.items()] if signing else []
        self.env = postroute_env(workdir / "data", self.port, [*dns, *extra_env])
        init = run_cli(self.env, workdir, "init", "--json")
        self.api_key = json.loads(init.strip().splitlines()[-1])["api_key"]
        self.headers = {"Authorization": f"Bearer {self.api_key}"}
        self.signing = signing
        if signing is None:
            allow_unverified(POSTROUTE, self.env, workdir, INIT_ACCOUNT)
        self.children: list[Child] = []
        self._seen: dict[str, int] = {}
        self.profilers: list[Child] = []
        for part in ("api", "worker") if split else ("serve",):
            self.start_part(part)
        for n in range(extra_workers):  # more `postroute worker`s: they share the queue
            self.start_part("worker", f"worker{n + 2}")
        leader = self.children[0]
        if not wait_port(self.port, STARTUP_TIMEOUT, leader.proc):
            raise SystemExit(f"postroute {leader.name} did not listen:\n{leader.tail()}")

    def start_part(self, part: str, name: str | None = None) -> None:
        """Start ``postroute <part>`` (serve, api or worker), known as ``name``."""
        name = name or part
        log = self.workdir / f"{name}.log"
        self.children.append(Child(name, [str(POSTROUTE), part], log, self.env, self.workdir))

    def stop_part(self, part: str) -> None:
        """Stop ``postroute <part>`` cleanly (SIGTERM: it finishes what it holds)."""
        for child in [c for c in self.children if c.name == part]:
            child.stop()
            self.children.remove(child)

    def create_pool(self, sink_port: int, max_connections: int) -> str:
        body = {
            "name": "bench-sink",
            "host": LOOPBACK,
            "port": sink_port,
            "encryption": "none",
            "max_connections": max_connections,
            "is_default": True,
        }
        reply = httpx.post(f"{self.url}/v1/smtp-pools", json=body, headers=self.headers, timeout=30)
        if reply.status_code != 201:
            raise SystemExit(f"creating the pool failed: {reply.status_code} {reply.text}")
        return str(reply.json()["id"])

    def add_domain(self) -> str:
        """With ``signing``: the load's From domain added over the API and verified."""
        return self.signing.add_over_api(self.url, self.headers) if self.signing else "unsigned"

    def mime_bytes(self, message_id: str) -> int | None:
        url = f"{self.url}/v1/messages/{message_id}/raw"
        reply = httpx.get(url, headers=self.headers, timeout=30)
        return len(reply.content) if reply.status_code == 200 else None

    def processes(self) -> dict[str, int]:
        """Name -> pid of every Postroute process, with ``serve``'s worker child as
        ``serve-worker`` (remembered: a restarted child would count from zero)."""
        found = {c.name: c.pid for c in self.children}
        for c in self.children:
            for i, pid in enumerate(child_pids(c.pid)):
                found[f"{c.name}-worker" + (f"{i}" if i else "")] = pid
        self._seen.update(found)
        return dict(self._seen)

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.processes().items()}

    def peak_rss(self) -> dict[str, float]:
        return {name: round(peak_rss_mb(pid), 1) for name, pid in self.processes().items()}

    def check_alive(self) -> None:
        for c in self.children:
            if not c.alive():
                raise SystemExit(f"postroute {c.name} exited:\n{c.tail()}")

    # -- profiling (py-spy, sampling: ~no cost to the profiled process) ----------------------

    def start_profiles(
        self, outdir: Path, tag: str, gil: bool, only: str | None = None, rate: int = 200
    ) -> None:
        """py-spy on each process (or the ``only`` one). ``gil``: only samples holding the
        GIL (Python CPU); else every active sample (also C code that releases the GIL, such
        as SQLite, and threads waiting for a CPU)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        outdir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.processes().items():
            if only not in (None, name):
                continue
            out = outdir / f"{tag}-{name}.collapsed"
            cmd = [spy, "record", "--pid", str(pid), "--rate", str(rate)]
            cmd += ["--format", "raw", "--output", str(out), "--nonblocking"]
            cmd += ["--gil"] if gil else []
            self.profilers.append(Child(f"py-spy-{name}", cmd, outdir / f"{out.name}.log"))

    def stop_profiles(self) -> None:
        """SIGINT makes py-spy write its output."""
        for p in self.profilers:
            if p.alive():
                os.kill(p.pid, signal.SIGINT)
        for p in self.profilers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(60)  # writing a big profile takes a few seconds
            p.stop()
        self.profilers = []

    def stop(self) -> None:
        self.stop_profiles()
        for c in reversed(self.children):
            c.stop()
