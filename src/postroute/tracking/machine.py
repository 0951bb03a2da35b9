"""Machine opens and clicks: the rules, in one table that the recorder and the tests share.

Each rule is a name (the event's ``data.machine_reason``) and a test of a hit in its
context. The first rule that holds names the reason; a hit no rule holds for is human.
Rules are applied when hits are drained (reading the database is fine there), never by
the endpoint.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from crawlerdetect import CrawlerDetect  # type: ignore[import-untyped]

from postroute.tracking.hits import CLICK, Hit

HEAD_REQUEST = "head_request"
APPLE_MPP = "apple_mpp"
GOOGLE_PROXY = "google_proxy"
SCANNER_UA = "scanner_ua"
TOO_FAST = "too_fast"
ALL_LINKS = "all_links"

# A hit this soon after the message's `sent` event (or before it was recorded) is a
# machine's: a link scanner at the receiving side, a prefetch on delivery.
TOO_FAST_SECONDS = 5.0
# Two different links of one message clicked this close together: a scanner following
# every link (a person's click takes the browser to the front first).
ALL_LINKS_SECONDS = 2.0

# Apple Mail Privacy Protection loads remote content through Apple's proxies: their
# User-Agent is a bare "Mozilla/5.0", and some of them fetch from Apple's own network.
APPLE_PROXY_UA = "Mozilla/5.0"
APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
# Gmail's image proxy: "Mozilla/5.0 (...) (via ggpht.com GoogleImageProxy)".
_GOOGLE = re.compile(r"GoogleImageProxy|ggpht\.com", re.IGNORECASE)
# What crawlerdetect calls a bot but is a mail client loading images for its reader:
# Outlook for Windows ("... Microsoft Outlook 16.0.x; ms-office; MSOffice 16)").
_MAIL_CLIENTS = re.compile(r"\bms-office\b|\bMSOffice\b", re.IGNORECASE)
_detector = CrawlerDetect()


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules know beside the hit itself."""

    sent_at: datetime | None  # the message's first `sent` event; None: not recorded yet
    in_burst: bool  # a click among others of different links (see :func:`bursts`)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    test: Callable[[Hit, Context], bool]
    what: str  # for the docs and the tests


def _apple(hit: Hit, _: Context) -> bool:
    return hit.user_agent.strip() == APPLE_PROXY_UA or _in_apple_network(hit.ip)


@lru_cache(maxsize=4096)
def _in_apple_network(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in APPLE_NETWORKS)


def _google(hit: Hit, _: Context) -> bool:
    return _GOOGLE.search(hit.user_agent) is not None


def _scanner(hit: Hit, _: Context) -> bool:
    return is_scanner(hit.user_agent)


@lru_cache(maxsize=8192)
def is_scanner(user_agent: str) -> bool:
    """A bot, crawler or link checker by its User-Agent (crawlerdetect's list; about 0.1
    to 0.5 ms per new agent, hence the cache); no User-Agent at all is a script's."""
    agent = user_agent.strip()
    if not agent:
        return True
    if _MAIL_CLIENTS.search(agent):
        return False
    return bool(_detector.is_crawler(agent))


def warm() -> None:
    """Compile crawlerdetect's patterns (about 0.2 s, once per process)."""
    _detector.is_crawler("Mozilla/5.0 (warm-up)")


def _too_fast(hit: Hit, context: Context) -> bool:
    if context.sent_at is None:
        return True
    return hit.at < context.sent_at + timedelta(seconds=TOO_FAST_SECONDS)


RULES: tuple[Rule, ...] = (
    Rule(HEAD_REQUEST, lambda hit, _: hit.method == "HEAD", "a HEAD request"),
    Rule(
        APPLE_MPP,
        _apple,
        f"User-Agent exactly {APPLE_PROXY_UA!r}, or an address in Apple's network "
        + ", ".join(str(n) for n in APPLE_NETWORKS),
    ),
    Rule(GOOGLE_PROXY, _google, "User-Agent naming GoogleImageProxy or ggpht.com"),
    Rule(
        SCANNER_UA,
        _scanner,
        "no User-Agent, or one crawlerdetect knows as a bot (Outlook's ms-office excepted)",
    ),
    Rule(
        TOO_FAST,
        _too_fast,
        f"within {TOO_FAST_SECONDS:g} s of the message's `sent` event, or before it",
    ),
    Rule(
        ALL_LINKS,
        lambda hit, context: hit.kind == CLICK and context.in_burst,
        f"a click among clicks of different links of the message within "
        f"{ALL_LINKS_SECONDS:g} s of each other",
    ),
)


def reason(hit: Hit, context: Context, rules: Sequence[Rule] = RULES) -> str | None:
    """The name of the first rule that holds; None: a person."""
    for rule in rules:
        if rule.test(hit, context):
            return rule.name
    return None


@dataclass(frozen=True, slots=True)
class Click:
    """A click as the burst rule sees it (a hit being drained or an event stored)."""

    key: str  # the hit id
    message_id: str
    at: datetime
    link_index: int


def bursts(clicks: Iterable[Click]) -> set[str]:
    """The keys of the clicks that have a click of another link of the same message
    less than ``ALL_LINKS_SECONDS`` away (before or after)."""
    window = timedelta(seconds=ALL_LINKS_SECONDS)
    by_message: dict[str, list[Click]] = {}
    for click in clicks:
        by_message.setdefault(click.message_id, []).append(click)
    found: set[str] = set()
    for group in by_message.values():
        group.sort(key=lambda c: c.at)
        start = 0
        for i, click in enumerate(group):
            while group[start].at <= click.at - window:
                start += 1
            # the earlier neighbours of this click; a pair marks both
            for other in group[start:i]:
                if other.link_index != click.link_index:
                    found.add(click.key)
                    found.add(other.key)
    return found
