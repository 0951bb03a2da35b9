"""Postroute's commands as real subprocesses, for tests of whole processes: started on the
test's database with free loopback ports, waited for until they listen, their output in a
file, killed (with their worker child) if still running at the end.

    with Processes(settings, tmp_path) as processes:
        proc = processes.start("serve", http=True, POSTROUTE_LEASE_SECONDS="2")
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output

``start(..., code=SNIPPET)`` runs ``python -c SNIPPET`` instead of ``python -m postroute
COMMAND`` (with the same environment): a test can patch the process before it starts.
Every start gets new ports; ``data_dir=`` reuses a data directory (a restart).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from postroute.config import Settings
from tests.support.relay import HOST, closed_port

START_TIMEOUT = 60.0  # seconds a process may take to listen (a loaded machine)
EXIT_TIMEOUT = 120.0  # seconds a test waits for an exit before it calls the process hung


@dataclass
class Process:
    """One started process and where it listens."""

    popen: subprocess.Popen[bytes]
    output_file: Path
    data_dir: Path
    smtp_port: int
    smtps_port: int
    http_port: int
    _output: IO[bytes] = field(repr=False)

    @property
    def output(self) -> str:
        return self.output_file.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def children(self) -> list[int]:
        """Pids of its running child processes (``serve``'s worker)."""
        found: list[int] = []
        with_tasks = Path(f"/proc/{self.popen.pid}/task")
        if with_tasks.exists():
            for task in with_tasks.iterdir():
                try:
                    found += [int(c) for c in (task / "children").read_text().split()]
                except FileNotFoundError:  # a thread that just ended
                    continue
        return [pid for pid in found if alive(pid)]

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Its exit status (negative: the signal that killed it)."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout:g} s later:\n{self.output}") from None

    def kill_all(self) -> None:
        """SIGKILL it and its children at once, as a crash of the machine would."""
        children = self.children()
        self.popen.kill()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        self.popen.wait(30)
        wait_until(lambda: not any(alive(pid) for pid in children), "the children to die")


class Processes:
    """Starts processes on ``settings``' database; kills what is left on exit."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.started: list[Process] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self.started:
            try:
                if proc.popen.poll() is None:
                    proc.kill_all()
            finally:
                proc._output.close()

    def start(
        self,
        command: str,
        *,
        http: bool = False,
        smtp: bool = True,
        code: str | None = None,
        data_dir: Path | None = None,
        **env: str,
    ) -> Process:
        """Start ``command``; return once its STARTTLS listener greets (``smtp``) and its
        /healthz answers 200 (``http``). ``env``: more POSTROUTE_* settings."""
        name = f"{command}-{len(self.started)}"
        data_dir = data_dir or self.tmp_path / name
        proc_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("POSTROUTE_")},
            "POSTROUTE_DATABASE_URL": self.settings.db_url,
            "POSTROUTE_SECRET_KEY": self.settings.secret_keys[0],
            "POSTROUTE_DATA_DIR": str(data_dir),
            "POSTROUTE_HTTP_BIND": f"{HOST}:{closed_port()}",
            "POSTROUTE_SMTP_BIND": f"{HOST}:{closed_port()}",
            "POSTROUTE_SMTPS_BIND": f"{HOST}:{closed_port()}",
            "POSTROUTE_SMTP_HOSTNAME": "mx.postroute.test",
            "POSTROUTE_RELAY_CA_FILE": str(self.settings.relay_ca_file),
            "POSTROUTE_LOG_LEVEL": "WARNING",
            "POSTROUTE_SERVE_WORKERS": "1",  # one worker child, unless a test asks for more
            **env,
        }
        argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "postroute"]
        output_file = self.tmp_path / f"{name}.log"
        output = output_file.open("wb")
        popen = subprocess.Popen(
            [*argv, command],
            env=proc_env,
            cwd=self.tmp_path,  # no stray .env is read
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        proc = Process(
            popen,
            output_file,
            data_dir,
            smtp_port=_port(proc_env["POSTROUTE_SMTP_BIND"]),
            smtps_port=_port(proc_env["POSTROUTE_SMTPS_BIND"]),
            http_port=_port(proc_env["POSTROUTE_HTTP_BIND"]),
            _output=output,
        )
        self.started.append(proc)
        if smtp:
            wait_until(lambda: greeting(proc.smtp_port) is not None, "the 220 greeting", proc)
        if http:
            wait_until(lambda: healthy(proc.url), "/healthz", proc)
        return proc


def _port(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


def greeting(port: int) -> bytes | None:
    """The first reply line on ``port``; None while nothing listens there."""
    try:
        with (
            socket.create_connection((HOST, port), timeout=2) as sock,
            sock.makefile("rb") as reader,
        ):
            return reader.readline() or None
    except OSError:
        return None


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def refuses(port: int) -> bool:
    """Nothing listens on ``port`` any more."""
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until(check: Callable[[], object], what: str, proc: Process | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"process exited ({proc.popen.returncode}):\n{proc.output}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.output}" if proc else ""))
