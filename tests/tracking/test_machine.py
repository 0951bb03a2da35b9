"""Machine opens and clicks, as the events say after a drain: each rule of the one table
(``machine.RULES``) on a hit made for it, a plain browser a minute after `sent` as a
person, the first human open and click flagged ``first``, and the all-links rule across
drains (a click waits until the clicks just after it are known)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from postroute.delivery.worker import Worker
from postroute.events import names
from postroute.kit.clock import FakeClock
from postroute.preparation.tokens import Tokens
from postroute.tracking import machine
from postroute.tracking.service import Tracking
from tests.conftest import Tenant
from tests.support.relay import RecordingRelay
from tests.tracking.conftest import CHROME, events_of, sent_messages, visitor

SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
OUTLOOK = (
    "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; "
    "Microsoft Outlook 16.0.5356; ms-office; MSOffice 16)"
)
READER = "203.0.113.7"
URL = "https://shop.example.com/a"


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # names.OPENED or names.CLICKED
    method: str
    user_agent: str
    ip: str
    after_sent: float  # seconds
    reason: str | None


CASES = [
    Case("apple mpp proxy", names.OPENED, "GET", "Mozilla/5.0", READER, 60, machine.APPLE_MPP),
    Case("apple network", names.OPENED, "GET", SAFARI, "17.58.101.3", 60, machine.APPLE_MPP),
    Case("gmail image proxy", names.OPENED, "GET", GMAIL, "66.249.84.1", 60, machine.GOOGLE_PROXY),
    Case("link scanner", names.CLICKED, "GET", "curl/8.5.0", READER, 60, machine.SCANNER_UA),
    Case("no user agent", names.CLICKED, "GET", "", READER, 60, machine.SCANNER_UA),
    Case("head request", names.CLICKED, "HEAD", CHROME, READER, 60, machine.HEAD_REQUEST),
    Case("click 1 s after sent", names.CLICKED, "GET", CHROME, READER, 1, machine.TOO_FAST),
    Case("open 1 s after sent", names.OPENED, "GET", SAFARI, READER, 1, machine.TOO_FAST),
    Case("browser click a minute later", names.CLICKED, "GET", CHROME, READER, 60, None),
    Case("browser open a minute later", names.OPENED, "GET", SAFARI, READER, 60, None),
    Case("outlook desktop open", names.OPENED, "GET", OUTLOOK, READER, 60, None),
]


def test_every_rule_has_a_case() -> None:
    covered = {c.reason for c in CASES} | {machine.ALL_LINKS}  # all links: its own tests
    assert covered - {None} == {rule.name for rule in machine.RULES}


STATUS = {names.OPENED: 200, names.CLICKED: 302}  # the pixel, the redirect


def path(tokens: Tokens, kind: str, message_id: str, index: int = 0) -> str:
    if kind == names.OPENED:
        return "/t/o/" + tokens.open_token(message_id)
    return "/t/c/" + tokens.click_token(message_id, index, f"{URL}/{index}")


async def test_each_rule_flags_its_hits_and_a_person_is_a_person(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    clock: FakeClock,
    tracking: Tracking,
) -> None:
    ids = await sent_messages(client, tenant, relay, worker, count=len(CASES))
    sent_at = clock.now()
    for case, message_id in sorted(zip(CASES, ids, strict=True), key=lambda p: p[0].after_sent):
        clock.set(sent_at)
        clock.advance(case.after_sent)
        async with visitor(app, case.ip) as browser:
            headers = {"User-Agent": case.user_agent}
            reply = await browser.request(
                case.method, path(tokens, case.kind, message_id), headers=headers
            )
        assert reply.status_code == STATUS[case.kind], (case.name, reply.text)
    assert await tracking.recorder.drain(final=True) == len(CASES)
    for case, message_id in zip(CASES, ids, strict=True):
        (event,) = await events_of(client, tenant, message_id, case.kind)
        data = event["data"]
        assert data["machine_reason"] == case.reason, case.name
        assert data["machine"] is (case.reason is not None), case.name
        assert data["first"] is (case.reason is None), case.name
        assert (data["user_agent"], data["ip"]) == (case.user_agent, case.ip), case.name
        at = datetime.fromisoformat(event["created_at"])
        assert at == sent_at + timedelta(seconds=case.after_sent), case.name  # the hit's time
        if case.kind == names.CLICKED:
            assert (data["url"], data["link_index"]) == (f"{URL}/0", 0)


async def test_the_first_human_open_and_click_are_flagged_first(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    clock: FakeClock,
    tracking: Tracking,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    clock.advance(60)
    hits = [
        (names.OPENED, "Mozilla/5.0"),  # Apple's proxy: a machine, never first
        (names.OPENED, SAFARI),  # first human open
        (names.CLICKED, CHROME),  # first human click
        (names.OPENED, SAFARI),
    ]
    for kind, agent in hits:
        reply = await client.get(path(tokens, kind, message_id), headers={"User-Agent": agent})
        assert reply.status_code == STATUS[kind]
        clock.advance(10)
    await tracking.recorder.drain(final=True)  # same batch: earlier in it counts
    for kind in (names.CLICKED, names.OPENED):  # a later drain: stored ones count
        await client.get(path(tokens, kind, message_id))
        clock.advance(10)
    await tracking.recorder.drain(final=True)
    opens = await events_of(client, tenant, message_id, names.OPENED)
    clicks = await events_of(client, tenant, message_id, names.CLICKED)
    assert [e["data"]["first"] for e in opens] == [False, True, False, False]
    assert [e["data"]["machine"] for e in opens] == [True, False, False, False]
    assert [e["data"]["first"] for e in clicks] == [True, False]


async def test_all_links_clicked_at_once_is_a_machine(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    clock: FakeClock,
    tracking: Tracking,
) -> None:
    scanned, read = await sent_messages(client, tenant, relay, worker, count=2)
    clock.advance(60)
    for index in range(3):  # a browser-like scanner follows every link within a second
        assert (await client.get(path(tokens, names.CLICKED, scanned, index))).status_code == 302
        clock.advance(0.3)
    for index in range(2):  # a person: one link, then another ten seconds later
        assert (await client.get(path(tokens, names.CLICKED, read, index))).status_code == 302
        clock.advance(10)
    await tracking.recorder.drain(final=True)
    scanner = await events_of(client, tenant, scanned, names.CLICKED)
    assert [e["data"]["machine_reason"] for e in scanner] == [machine.ALL_LINKS] * 3
    assert [e["data"]["first"] for e in scanner] == [False] * 3
    person = await events_of(client, tenant, read, names.CLICKED)
    assert [e["data"]["machine"] for e in person] == [False, False]
    assert [e["data"]["first"] for e in person] == [True, False]


@pytest.mark.parametrize("gap", [0.5, 1.9])
async def test_a_click_waits_for_the_clicks_just_after_it(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    clock: FakeClock,
    tracking: Tracking,
    gap: float,
) -> None:
    """A drain between two clicks of a burst records neither yet (the open goes at once);
    the next one, once the window has passed, records both as all-links."""
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    clock.advance(60)
    await client.get(path(tokens, names.CLICKED, message_id, 0))
    await client.get(path(tokens, names.OPENED, message_id))
    assert await tracking.recorder.drain() == 1  # the open
    clock.advance(gap)
    await client.get(path(tokens, names.CLICKED, message_id, 1))
    assert await tracking.recorder.drain() == 0
    clock.advance(machine.ALL_LINKS_SECONDS + 0.1)
    assert await tracking.recorder.drain() == 2
    clicks = await events_of(client, tenant, message_id, names.CLICKED)
    assert [e["data"]["machine_reason"] for e in clicks] == [machine.ALL_LINKS] * 2
