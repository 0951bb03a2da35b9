"""What it takes to open an SMTP session to one upstream relay (decrypted, in memory only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    encryption: str  # "tls" (STARTTLS required) | "ssl" (implicit TLS) | "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed
    verify_tls: bool = True


@dataclass(frozen=True)
class ClientOptions:
    """Process-wide knobs for upstream sessions (from Settings)."""

    timeout: float = 10.0
    ca_file: Path | None = None
    helo_name: str | None = None
