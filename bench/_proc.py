"""Process helpers for the benchmark: free ports, child process groups, /proc figures.

Every process is started in its own session (process group == its pid) and stopped
by that pid only: SIGTERM to the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Child:
    """A child process in its own process group, output to ``log``."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.log = name, log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        else:  # the leader is gone; reap anything left in its group
            _signal_group(self.pid, signal.SIGKILL)
        self._fh.close()
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 when it is gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = data[data.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(pid: int) -> list[int]:
    """Direct children (``serve`` runs its delivery worker as one)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) in MiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores): user, nice, system,
    irq and softirq; not idle, iowait, nor steal (time the hypervisor gave elsewhere)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in first[:7])
    return (user + nice + system + irq + softirq) / CLK_TCK


def machine_steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests while this one wanted to run (all
    cores): a share of it during a run means the machine had less than its cores."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return int(first[7]) / CLK_TCK if len(first) > 7 else 0.0


# -- the upstream sink -----------------------------------------------------------------------


class Sink:
    """Postfix's ``smtp-sink -c`` if installed, else ``bench/sink.py`` (aiosmtpd).

    Both print ``mesg=N`` counters to their output file; :meth:`count` reads the last one.
    """

    def __init__(self, workdir: Path, prefer: str = "auto") -> None:
        self.port = free_port()
        binary = shutil.which("smtp-sink") or (
            "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
        )
        if prefer == "smtp-sink" and binary is None:
            raise SystemExit("smtp-sink not found: apt-get install -y postfix")
        addr = f"{LOOPBACK}:{self.port}"
        if binary and prefer != "aiosmtpd":
            self.kind = "smtp-sink"
            cmd = [binary, "-c", "-m", "512"]
            if os.geteuid() == 0:
                cmd += ["-u", "nobody"]
            cmd += [addr, "1024"]
        else:
            self.kind = "aiosmtpd"
            cmd = [sys.executable, str(HERE / "sink.py"), "--port", str(self.port)]
        self.child = Child("sink", cmd, workdir / "sink.out")
        self.pid = self.child.pid
        if not wait_port(self.port, 10, self.child.proc):
            self.child.stop()
            raise SystemExit(f"{self.kind} did not start on {addr}")

    def count(self) -> int:
        with self.child.log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200))
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        self.child.stop(5)
