"""Pytest fixtures for relay tests. Import them into a test module or conftest.py:

from tests.support.fixtures import closed_port, relay_ca, relay_factory, silent_server
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroute.delivery.worker import Worker
from tests.support.dns import DnsServer
from tests.support.relay import RecordingRelay, SilentServer, reserved_closed_port


@dataclass(frozen=True)
class RelayCA:
    """A test CA; `ca_file` is its PEM (ClientOptions.ca_file, POSTROUTE_RELAY_CA_FILE)."""

    ca: trustme.CA
    ca_file: Path


RelayFactory = Callable[..., RecordingRelay]


@pytest.fixture(scope="session")
def relay_ca(tmp_path_factory: pytest.TempPathFactory) -> RelayCA:
    """One trusted CA for the whole test session, its PEM written to a temp file."""
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("relay-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return RelayCA(ca=ca, ca_file=ca_file)


@pytest.fixture
def relay_factory(relay_ca: RelayCA) -> Iterator[RelayFactory]:
    """Start `RecordingRelay(**kwargs)` (certificate from `relay_ca` unless `ca=` is given);
    every relay started is stopped at teardown."""
    started: list[RecordingRelay] = []

    def make(**kwargs: Any) -> RecordingRelay:
        kwargs.setdefault("ca", relay_ca.ca)
        relay = RecordingRelay(**kwargs)
        relay.start()
        started.append(relay)
        return relay

    yield make
    for relay in reversed(started):
        relay.stop()


@pytest.fixture
def relay(relay_factory: RelayFactory) -> RecordingRelay:
    """A plain relay: no TLS, no AUTH, accepts everything."""
    return relay_factory()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections for the whole test."""
    with reserved_closed_port() as port:
        yield port


@pytest.fixture
def dns(runtime: Any) -> Iterator[DnsServer]:
    """A real DNS server on loopback; the runtime's domain checks ask it."""
    with DnsServer() as server:
        runtime.settings = runtime.settings.model_copy(update={"dns_resolvers": server.resolvers})
        yield server


@pytest.fixture
async def worker(runtime: Any) -> AsyncIterator[Worker]:
    """A delivery worker on the test's runtime (tests drive it with ``drain()``)."""
    w = Worker(runtime, owner="test-worker")
    yield w
    await w.close()
