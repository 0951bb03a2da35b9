"""The public tracking endpoints that mail clients reach: the open pixel, tracked links
and the one-click unsubscribe. No authentication: the token is the credential.

Plain Starlette routes (no dependency injection: the pixel and the redirect are the
busiest requests of all) left out of the OpenAPI document, which describes the API for
programs. A token that fails its check answers 404 with the error envelope, never a
redirect.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from postroute import errors
from postroute.api import errors as api_errors
from postroute.tracking.service import Tracking, UnknownToken

# A 1x1 transparent GIF (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
ONE_CLICK = "One-Click"  # RFC 8058: the body is List-Unsubscribe=One-Click
MAX_BODY = 4096
NOT_ONE_CLICK = (
    "an unsubscribe POST carries the form field List-Unsubscribe=One-Click "
    "(RFC 8058), as application/x-www-form-urlencoded or multipart/form-data"
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
line-height:1.5;color:#222}}button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}</style>
</head><body><h1>{title}</h1>{body}</body></html>
"""
CONFIRM_PAGE = _PAGE.format(
    title="Unsubscribe",
    body="<p>Stop receiving these emails at this address?</p>"
    '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button></form>',
)
DONE_PAGE = _PAGE.format(
    title="You are unsubscribed",
    body="<p>This address will not receive these emails any more.</p>",
)


def _tracking(request: Request) -> Tracking:
    tracking: Tracking = request.app.state.tracking
    return tracking


def _client(request: Request) -> tuple[str, str]:
    agent = request.headers.get("user-agent", "")
    return agent, request.client.host if request.client else ""


def _unknown() -> Response:
    return api_errors.envelope(404, errors.NOT_FOUND, UnknownToken().message)


async def open_pixel(request: Request) -> Response:
    agent, ip = _client(request)
    try:
        await _tracking(request).opened(request.path_params["token"], request.method, agent, ip)
    except UnknownToken:
        return _unknown()
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


async def click(request: Request) -> Response:
    agent, ip = _client(request)
    token = request.path_params["token"]
    try:
        target = await _tracking(request).clicked(token, request.method, agent, ip)
    except UnknownToken:
        return _unknown()
    return Response(status_code=302, headers={"Location": target, **NO_STORE})


async def unsubscribe(request: Request) -> Response:
    """GET (and HEAD) shows the confirmation page and never unsubscribes (link scanners
    follow links); POST with List-Unsubscribe=One-Click unsubscribes."""
    tracking = _tracking(request)
    token = request.path_params["token"]
    try:
        if request.method != "POST":
            tracking.unsubscribe_message(token)  # a bad token: 404, not a page
            return HTMLResponse(CONFIRM_PAGE, headers=PAGE_HEADERS)
        if not await _one_click(request):
            return api_errors.envelope(400, api_errors.BAD_REQUEST, NOT_ONE_CLICK)
        agent, ip = _client(request)
        await tracking.unsubscribe(token, agent, ip)
    except UnknownToken:
        return _unknown()
    return HTMLResponse(DONE_PAGE, headers=PAGE_HEADERS)


async def _one_click(request: Request) -> bool:
    """Whether the body says List-Unsubscribe=One-Click (a form, either encoding; a
    body without a content type is read as URL-encoded)."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=0, max_fields=16, max_part_size=MAX_BODY)
        except HTTPException:  # not a valid multipart body, or a file in it
            return False
        values = [v for v in form.getlist("List-Unsubscribe") if isinstance(v, str)]
    else:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return False
        values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(
            "List-Unsubscribe", []
        )
    return any(v.strip().lower() == ONE_CLICK.lower() for v in values)


router = APIRouter()
router.add_route("/t/o/{token}", open_pixel, methods=["GET", "HEAD"], include_in_schema=False)
router.add_route("/t/c/{token}", click, methods=["GET", "HEAD"], include_in_schema=False)
router.add_route(
    "/t/u/{token}", unsubscribe, methods=["GET", "HEAD", "POST"], include_in_schema=False
)
