"""One settings object for the whole process, read from ``POSTROUTE_*`` variables and ``.env``."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from postroute import datadir
from postroute.datadir import SECRET_KEY_FILE


def parse_bind(value: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:25`` for IPv6) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    return host.strip("[]"), int(port)


class DeliverySettings(BaseSettings):
    """How mail leaves: the upstream relays' sessions, retries, the worker, the circuit
    breaker (part of :class:`Settings`, read with the same ``POSTROUTE_`` prefix)."""

    # Upstream relays
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    relay_ca_file: Path | None = Field(
        default=None, description="Extra CA bundle trusted when verifying relay certificates."
    )
    relay_helo_name: str | None = None

    # Delivery
    retry_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_seconds: float = Field(default=60.0, ge=0)
    lease_seconds: float = Field(default=300.0, gt=0)
    worker_batch_size: int = Field(default=500, ge=1, le=5000)
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    serve_worker_process: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="`postroute serve` runs the delivery worker as a child process: "
        "auto = when the machine has more than one CPU.",
    )
    serve_workers: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Worker processes `postroute serve` starts when its worker runs in child "
        "processes; each claims from the queue on its own (DKIM signing and link tracking "
        "cost CPU per message: a second worker gets them a core).",
    )
    worker_record_seconds: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description="Outcomes are gathered this long before they are written (one transaction).",
    )
    connection_idle_seconds: float = Field(default=30.0, gt=0)
    max_queue_hours: float = Field(
        default=72.0, gt=0, description="A message waiting for a pool longer than this is dropped."
    )

    # Routing: circuit breaker and adaptive slow-down
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    throttle_recovery_seconds: float = Field(default=30.0, gt=0)


class Settings(DeliverySettings):
    model_config = SettingsConfigDict(env_prefix="POSTROUTE_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./postroute-data")
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: SecretStr | None = Field(
        default=None,
        description="Comma-separated keys; the first encrypts, all decrypt (rotation).",
    )
    http_bind: str = "127.0.0.1:8000"
    smtp_bind: str = "127.0.0.1:2587"
    smtps_bind: str = "127.0.0.1:2465"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_url: str = "http://127.0.0.1:8000"

    # HTTP API
    max_request_bytes: int = Field(default=30 * 1024 * 1024, gt=0)
    idempotency_hours: int = Field(default=24, ge=1)

    # SMTP submission (relay ingress)
    smtp_hostname: str | None = Field(default=None, description="Name in the greeting/EHLO.")
    smtp_max_message_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    smtp_max_recipients: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Recipients per SMTP transaction (as Postfix's smtpd_recipient_limit); the "
        "HTTP API allows 50 per field.",
    )
    smtp_max_messages_per_connection: int = Field(default=100, ge=1)
    smtp_max_connections_per_ip_per_minute: int = Field(default=600, ge=1)
    smtp_max_command_bytes: int = Field(default=1024, ge=512)
    smtp_idle_timeout_seconds: float = Field(default=300.0, gt=0)

    # Authentication limits (SMTP AUTH and HTTP Bearer keys alike): see kit/guard.py
    auth_failures_per_source: int = Field(
        default=5,
        ge=1,
        le=100_000,
        description="Distinct wrong keys per minute from one address before its unknown keys "
        "are checked one at a time, slowly.",
    )
    auth_failures_global: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Distinct wrong keys per minute from all addresses before every unknown key "
        "is checked at a bounded global rate.",
    )
    auth_slow_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Wait before each check of an unknown key from a source over its limit "
        "(doubles with its failures, up to auth_slow_max_seconds).",
    )
    auth_slow_max_seconds: float = Field(default=8.0, gt=0, le=300)

    # Sending domains
    inbound_host: str | None = Field(
        default=None,
        description="The host that receives bounce mail: the MX of every return-path "
        "domain (default: the machine's FQDN).",
    )
    dns_resolvers: str | None = Field(
        default=None,
        description="DNS servers domain checks ask, comma-separated `ip` or `ip:port` "
        "(`[ipv6]:port`); default: the system's (/etc/resolv.conf).",
    )
    domain_recheck_hours: float = Field(default=6.0, gt=0, le=24 * 30)
    dns_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # how long a hard bounce keeps its address on the suppression list
    bounce_suppression_days: int = Field(default=90, ge=1, le=3650)

    # reverse proxies whose X-Forwarded-For / -Proto the HTTP server believes (addresses or
    # networks, comma-separated; "*" any): the client address of tracking hits and of the
    # limits on key guessing comes from there
    trusted_proxies: str = "127.0.0.1,::1"

    log_level: str = "INFO"

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            if part and part != "*":
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(f"{part!r} is not an address or network") from None
        return value

    @field_validator("dns_resolvers")
    @classmethod
    def _check_resolvers(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        resolvers(value)  # raises ValueError naming the entry that does not parse
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_db_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value[len("postgresql://") :]
        if value.startswith("sqlite://") and not value.startswith("sqlite+aiosqlite://"):
            value = "sqlite+aiosqlite://" + value[len("sqlite://") :]
        try:
            make_url(value).port  # noqa: B018 (read: a port that is not a number raises)
        except (ValueError, TypeError, ArgumentError):  # never the value: it may hold a password
            raise ValueError("is not a database URL") from None
        return value

    @property
    def db_url(self) -> str:
        """The database to open. A SQLite file is made private first (the data dir 0700,
        the file created 0600 before SQLite opens it, looser modes fixed with a warning):
        every process asks for this URL before it connects (see ``datadir``)."""
        url = self._url()
        path = sqlite_file(url)
        if path is not None:
            if self.database_url is None:
                datadir.ensure_dir(self.data_dir)
            datadir.ensure_database_file(path)
        return url

    def _url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / datadir.DATABASE_FILE).resolve()}"

    @cached_property
    def bounce_host(self) -> str:
        """The MX of every return-path domain: ``POSTROUTE_INBOUND_HOST``, else this
        machine's name (looked up once: ``getfqdn`` may ask DNS, and blocks)."""
        return (self.inbound_host or socket.getfqdn()).rstrip(".").lower()

    @property
    def resolver_list(self) -> list[tuple[str, int]] | None:
        """The DNS servers of domain checks; None: the system's."""
        return resolvers(self.dns_resolvers) if self.dns_resolvers else None

    @property
    def is_sqlite(self) -> bool:
        return self._url().startswith("sqlite")

    @property
    def worker_in_own_process(self) -> bool:
        """Whether ``serve`` runs the delivery worker as a child process."""
        if self.serve_worker_process == "auto":
            return (os.cpu_count() or 1) > 1
        return self.serve_worker_process == "on"

    @cached_property
    def secret_keys(self) -> list[str]:
        """The secret keys, first one current. Generated into the data dir when unset."""
        if self.secret_key is not None and self.secret_key.get_secret_value().strip():
            raw = self.secret_key.get_secret_value()
        else:
            raw = ensure_secret_file(self.data_dir)
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if not keys:
            raise ValueError("POSTROUTE_SECRET_KEY holds no key")
        return keys


def resolvers(value: str) -> list[tuple[str, int]]:
    """``1.1.1.1, 127.0.0.1:5353, [::1]:53`` as (address, port) pairs."""
    found = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        host, port = entry, 53
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise ValueError(f"DNS resolver {entry!r}: write [address]:port")
                port = int(rest[1:])
        elif entry.count(":") == 1:
            host, _, text = entry.partition(":")
            if not text.isdigit():
                raise ValueError(f"DNS resolver {entry!r}: the port is not a number")
            port = int(text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"DNS resolver {entry!r}: not an IP address") from None
        if not 0 < port < 65536:
            raise ValueError(f"DNS resolver {entry!r}: the port must be 1 to 65535")
        found.append((host, port))
    if not found:
        raise ValueError("POSTROUTE_DNS_RESOLVERS lists no resolver")
    return found


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    return None if name.startswith("file:") else Path(name)  # a URI: SQLite's business


def ensure_secret_file(data_dir: Path) -> str:
    """Read the generated secret key, creating it (mode 0600, the data dir 0700) on
    first run."""
    datadir.ensure_dir(data_dir)
    path = data_dir / SECRET_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key
