"""Sending domains for the benchmarks: the account's From-domain rule, and with ``--dkim``
a verified domain (DKIM RSA-2048, VERP return path) answered by a real DNS server.

New accounts send only from verified domains (``require_verified_domain``). Without
``--dkim`` the benchmarks turn that off (``postroute accounts set NAME
--no-require-verified-domain``), so that mail is relayed as it was before sending domains
existed: unsigned, with the From address as envelope sender. Code older than sending
domains has no such command and no such rule: then nothing is done.

With ``--dkim`` the rule stays on. :class:`SigningDomain` starts the test DNS server
(``tests/support/dns.py``: dnslib, a UDP port of 127.0.0.1, in a thread of the benchmark),
whose ``POSTROUTE_DNS_RESOLVERS`` goes into every Postroute process's environment; the
load's From domain is added (over the API or the CLI), every record Postroute asks for is
published, and the domain is verified. Mail from it is then DKIM-signed and leaves with
``bounces+<message id>@bounces.<domain>`` as envelope sender.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support.dns

from tests.support.dns import DnsServer  # noqa: E402

FROM_DOMAIN = "bench.test"  # the domain of both loads' From address
_CLI_RECORD = re.compile(r"^  (TXT|MX|CNAME)\s+(\S+)  (.*)$")
_QUOTED = re.compile(r'"([^"]*)"')


def allow_unverified(postroute: Path, env: dict[str, str], workdir: Path, account: str) -> str:
    """Let ``account`` send from any domain, as before sending domains existed. Returns what
    was done (for the log)."""
    done = subprocess.run(
        [str(postroute), "accounts", "set", account, "--no-require-verified-domain"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return done.stdout.strip()
    if "No such command 'set'" in done.stderr + done.stdout:
        return "no sending-domain rule in this code"
    raise SystemExit(f"postroute accounts set {account} failed:\n{done.stdout}{done.stderr}")


class SigningDomain:
    """A DNS server for the benchmark's whole life and the domain it verifies."""

    def __init__(self) -> None:
        self.dns = DnsServer().__enter__()
        self.env = {"POSTROUTE_DNS_RESOLVERS": self.dns.resolvers}
        self.domain: dict[str, Any] = {}

    def add_over_api(self, url: str, headers: dict[str, str], name: str = FROM_DOMAIN) -> str:
        """``POST /v1/domains``, publish its records, ``POST .../verify``; a line for the log."""
        reply = httpx.post(f"{url}/v1/domains", json={"name": name}, headers=headers, timeout=30)
        if reply.status_code != 201:
            raise SystemExit(f"adding {name} failed: {reply.status_code} {reply.text}")
        added = reply.json()
        self.dns.publish(added["records"])
        reply = httpx.post(f"{url}/v1/domains/{added['id']}/verify", headers=headers, timeout=60)
        if reply.status_code != 200:
            raise SystemExit(f"verifying {name} failed: {reply.status_code} {reply.text}")
        self.domain = reply.json()
        return self._check(self.domain["status"], self.domain["return_path"]["verified"], name)

    def add_over_cli(
        self, postroute: Path, env: dict[str, str], workdir: Path, account: str,
        name: str = FROM_DOMAIN,
    ) -> str:  # fmt: skip
        """``postroute domains add``, publish the records it prints, ``domains verify``."""
        out = self._cli(postroute, env, workdir, "add", name, "--account", account)
        records = [self._record(m) for line in out.splitlines() if (m := _CLI_RECORD.match(line))]
        if not records:
            raise SystemExit(f"postroute domains add printed no records:\n{out}")
        self.dns.publish(records)
        out = self._cli(postroute, env, workdir, "verify", name, "--account", account)
        first = out.splitlines()[0] if out else ""  # ID  NAME  STATUS  return path X: ...
        self.domain = {"name": name, "records": records, "summary": first}
        status = first.split()[2] if len(first.split()) > 2 else "?"
        return self._check(status, first.endswith(": verified"), name)

    @staticmethod
    def _cli(postroute: Path, env: dict[str, str], workdir: Path, *argv: str) -> str:
        done = subprocess.run([str(postroute), "domains", *argv], env=env, cwd=workdir,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        if done.returncode != 0:
            what = " ".join(argv)
            raise SystemExit(f"postroute domains {what} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    @staticmethod
    def _record(m: re.Match[str]) -> dict[str, str]:
        kind, name, value = m.groups()
        if kind == "TXT":  # quoted strings of <= 255 bytes, one value
            value = "".join(_QUOTED.findall(value))
        return {"type": kind, "name": name, "value": value}

    @staticmethod
    def _check(status: str, return_path: bool, name: str) -> str:
        if status != "verified" or not return_path:
            raise SystemExit(f"{name}: status {status}, return path verified: {return_path}")
        return f"{name}: verified, DKIM signs, return path verified"

    def stop(self) -> None:
        self.dns.__exit__(None, None, None)
