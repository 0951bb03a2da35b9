"""The List-Unsubscribe header fields of a message (RFC 2369, one-click by RFC 8058): an
https URL that unsubscribes on a POST (a GET only shows a page with one button: link
scanners follow links) and, when the From domain has a verified return path, a mailto
address on it. A message that has its own List-Unsubscribe keeps it, and gets neither
field from Postroute."""

from __future__ import annotations

from postroute.preparation import mime
from postroute.preparation.cache import Cache
from postroute.preparation.tracking import Links

LIST_UNSUBSCRIBE = "List-Unsubscribe"
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe-Post"
ONE_CLICK = "List-Unsubscribe=One-Click"
MAILTO_LOCAL = "unsub"  # unsub+<token>@<return-path domain>


def headers(
    content: bytes, content_id: str | None, message_id: str, links: Links, cache: Cache
) -> list[tuple[str, str]]:
    """The fields to put in front of ``content`` (none when it has its own)."""
    own = cache.get("unsubscribe", content_id, lambda: _own(content))
    if LIST_UNSUBSCRIBE.lower() in own:
        return []
    token = links.tokens.unsubscribe_token(message_id)
    uris = [f"<{links.base}/t/u/{token}>"]
    if links.mailto_domain:
        uris.append(f"<mailto:{MAILTO_LOCAL}+{token}@{links.mailto_domain}>")
    fields = [(LIST_UNSUBSCRIBE, ", ".join(uris))]
    if LIST_UNSUBSCRIBE_POST.lower() not in own:
        fields.append((LIST_UNSUBSCRIBE_POST, ONE_CLICK))
    return fields


def _own(content: bytes) -> frozenset[str]:
    """Which of the two fields the message has already."""
    names = {LIST_UNSUBSCRIBE.lower(), LIST_UNSUBSCRIBE_POST.lower()}
    return frozenset(names & mime.header_names(content))
