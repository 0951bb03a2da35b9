"""The ``prepare`` step for claimed messages: signed ones in the preparation thread (where
RSA runs beside the event loop), unsigned ones in the loop; each take's job in order,
as ``pipeline.prepare`` makes it."""

from __future__ import annotations

import base64
import threading
from dataclasses import replace
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postroute.delivery import pipeline
from postroute.delivery.dispatch import Take
from postroute.delivery.flight import InFlight
from postroute.delivery.preparer import CHUNK, Preparer
from postroute.preparation import Signing
from postroute.preparation.cache import Cache
from postroute.preparation.dkim import DkimKey
from tests.delivery.test_pipeline import flight

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SIGNING = Signing("bounces+msg_1@bounces.example.com", (DkimKey("example.com", "pr1", KEY),))
TXT = b"v=DKIM1; k=rsa; p=" + base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
)


def takes(count: int, signing: Signing | None) -> list[tuple[InFlight, Take]]:
    out = []
    for n in range(count):
        fl = flight()
        fl.claimed = replace(fl.claimed, message_id=f"msg_{n}")
        fl.envelope = replace(fl.envelope, message_id=f"msg_{n}")
        fl.signing = signing
        out.append((fl, Take("smtp_A", False)))
    return out


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names of the threads ``pipeline.prepare`` runs in."""
    seen: set[str] = set()
    real = pipeline.prepare

    def spy(*args: Any, **kw: Any) -> Any:
        seen.add(threading.current_thread().name)
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "prepare", spy)
    return seen


async def test_signed_messages_are_prepared_in_the_preparation_thread_in_order(
    threads: set[str],
) -> None:
    preparer = Preparer(Cache())
    batch = takes(CHUNK + 3, SIGNING)
    try:
        jobs = await preparer.prepare(batch)
    finally:
        preparer.close()
    assert {name.split("_")[0] for name in threads} == {"postroute-prepare"}
    assert [j.message_id for j in jobs] == [fl.claimed.message_id for fl, _ in batch]
    for job in jobs:
        assert job.sender == SIGNING.mail_from
        assert dkim.verify(job.data, dnsfunc=lambda *_, **__: TXT), job.message_id


async def test_unsigned_messages_are_prepared_in_the_event_loops_thread(
    threads: set[str],
) -> None:
    preparer = Preparer(Cache())
    try:
        jobs = await preparer.prepare(takes(3, None))
    finally:
        preparer.close()
    assert threads == {threading.current_thread().name}
    assert [j.sender for j in jobs] == ["shop@example.com"] * 3
