"""HTTP routes: ``POST /v1/send``, ``/v1/send/batch`` and ``/v1/messages``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, status
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError

from postroute import errors
from postroute.api.deps import AccountDep, RuntimeDep, SessionDep, SubmitterDep
from postroute.api.errors import responses
from postroute.api.params import ID_PATTERN, TEXT_MAX, TEXT_PATTERN, Timestamp, object_id
from postroute.api.routing import JsonRoute
from postroute.db import begin_read
from postroute.db.changes import Changes
from postroute.kit.text import TEXT_PATTERN as TAG_PATTERN
from postroute.messages import service, views
from postroute.messages.planning import Planned
from postroute.messages.schemas import (
    MessageFilter,
    SendBatchRequest,
    SendBatchResponse,
    SendRequest,
    SendResponse,
)
from postroute.messages.submit import Submitter
from postroute.messages.validation import MAX_TAG_LENGTH
from postroute.messages.views import CURSOR_PATTERN, MessageDetail, MessageList, MessageStatus

router = APIRouter(tags=["messages"], route_class=JsonRoute)
JSON = "application/json"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\u0020-\u007e]{1,255}$",
        description="Printable ASCII, at most 255 characters. A retried request with the same"
        " key and the same content (compared parsed: key order and spacing do not matter)"
        " within 24 h returns the first reply and sends nothing again.",
        examples=["order-1234"],
    ),
]
_SEND_ERRORS = responses(
    401,
    (409, "`idempotency_conflict`: the Idempotency-Key was used for another request."),
    413,
    (
        422,
        "`validation_failed` (every problem in `details`), `pool_not_found`"
        " or `no_pool_configured`.",
    ),
    429,
)
_EXAMPLE = {
    "from": "Shop <shop@example.com>",
    "to": ["customer@example.org"],
    "subject": "Your order",
    "text": "Thanks!",
    "html": "<p>Thanks!</p>",
    "tags": ["receipt"],
    "metadata": {"order": "1234"},
}
_ONE = {"one": {"summary": "A receipt", "value": _EXAMPLE}}
_BATCH = {"two": {"summary": "Two messages", "value": {"messages": [_EXAMPLE, _EXAMPLE]}}}


def _canonical(requests: list[SendRequest], batch: bool) -> bytes:
    """The request as parsed, in one spelling: what an Idempotency-Key is compared on."""
    messages = [r.model_dump(mode="json", by_alias=True) for r in requests]
    text = json.dumps({"batch": batch, "messages": messages}, sort_keys=True, separators=(",", ":"))
    return text.encode()


async def _send(
    requests: list[SendRequest],
    batch: bool,
    key: str | None,
    account: AccountDep,
    session: SessionDep,
    rt: RuntimeDep,
    submitter: Submitter,
) -> Response:
    ttl = timedelta(hours=rt.settings.idempotency_hours)
    body_hash = service.request_hash(_canonical(requests, batch)) if key else ""

    async def replay() -> JSONResponse | None:
        if not key:
            return None
        await begin_read(session)
        found = await service.idempotent_replay(
            session, account.account_id, key, body_hash, rt.clock, ttl
        )
        await session.commit()
        if found is None:
            return None
        headers = {"Idempotent-Replayed": "true"}
        return JSONResponse(found.response, status_code=found.status_code, headers=headers)

    def reply_of(planned: Sequence[Planned]) -> bytes:
        replies = planned[0].replies
        reply = SendBatchResponse.model_construct(data=replies) if batch else replies[0]
        return reply.model_dump_json().encode()  # pydantic's serialiser: no dict, no json

    def remember(planned: Sequence[Planned]) -> Changes:
        payload: dict[str, Any] = json.loads(reply_of(planned))
        now = rt.clock.now()
        return service.remembered(account.account_id, key or "", body_hash, 202, payload, now, ttl)

    # A replay answers before anything is checked again; the drafts are planned outside
    # any transaction (SQLite has one writer), and written in one write with the key.
    if (replayed := await replay()) is not None:
        return replayed
    planned = await submitter.plan(account.account_id, service.drafts(requests), batch=batch)
    try:
        (result,) = await submitter.store([planned], remember if key else None)
    except IntegrityError:  # a concurrent duplicate's key row is written: replay its answer
        if not key or (replayed := await replay()) is None:
            raise
        return replayed
    if isinstance(result, errors.DomainError):
        raise result
    rt.wake_worker()
    body = SendBatchResponse.model_construct(data=result) if batch else result[0]
    return Response(body.model_dump_json(), status_code=status.HTTP_202_ACCEPTED, media_type=JSON)


@router.post(
    "/v1/send",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SendResponse,
    summary="Send a message",
    responses=_SEND_ERRORS,
)
async def send(
    body: Annotated[SendRequest, Body(openapi_examples=_ONE)],
    account: AccountDep,
    session: SessionDep,
    rt: RuntimeDep,
    submitter: SubmitterDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """One message record per recipient (to, cc and bcc); the prepared MIME is stored
    before the 202. A replayed answer carries `Idempotent-Replayed: true`."""
    return await _send([body], False, idempotency_key, account, session, rt, submitter)


@router.post(
    "/v1/send/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SendBatchResponse,
    summary="Send up to 500 messages",
    responses=_SEND_ERRORS,
)
async def send_batch(
    body: Annotated[SendBatchRequest, Body(openapi_examples=_BATCH)],
    account: AccountDep,
    session: SessionDep,
    rt: RuntimeDep,
    submitter: SubmitterDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """All or nothing: one invalid message rejects the batch, with every problem listed
    (`messages[3].subject`). `data[i]` answers `messages[i]`."""
    return await _send(body.messages, True, idempotency_key, account, session, rt, submitter)


def _text(description: str, max_length: int = TEXT_MAX, pattern: str = TEXT_PATTERN) -> Any:
    return Query(description=description, max_length=max_length, pattern=pattern)


@router.get(
    "/v1/messages",
    response_model=MessageList,
    summary="List messages",
    responses=responses(401, 422, 429),
)
async def list_messages(
    account: AccountDep,
    session: SessionDep,
    status_: Annotated[
        MessageStatus | None, Query(alias="status", description="Only messages in this status.")
    ] = None,
    to: Annotated[str | None, _text("Recipient address (case-insensitive).")] = None,
    tag: Annotated[str | None, _text("A tag.", MAX_TAG_LENGTH, TAG_PATTERN)] = None,
    pool: Annotated[
        str | None, Query(description="Pool id.", pattern=ID_PATTERN, max_length=64)
    ] = None,
    since: Annotated[
        Timestamp, Query(description="Created at or after (ISO 8601; UTC if no zone).")
    ] = None,
    until: Annotated[
        Timestamp, Query(description="Created before (ISO 8601; UTC if no zone).")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(description="`next_cursor` of the previous page.", pattern=CURSOR_PATTERN),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
) -> MessageList:
    """Newest first; `next_cursor` is set while there are more."""
    f = MessageFilter(status=status_, to=to, tag=tag, pool_id=pool, since=since, until=until)
    return await views.list_messages(session, account.account_id, f, cursor, limit)


MessageId = Annotated[str, object_id("message", "msg_0123456789ABCDEFGHIJKLMNOP")]


@router.get(
    "/v1/messages/{message_id}",
    response_model=MessageDetail,
    summary="Get a message",
    responses=responses(401, 404, 422, 429),
)
async def get_message(
    message_id: MessageId, account: AccountDep, session: SessionDep
) -> MessageDetail:
    """Status, event timeline and delivery attempts."""
    return await views.message_detail(session, account.account_id, message_id)


@router.get(
    "/v1/messages/{message_id}/raw",
    summary="The prepared MIME",
    response_class=Response,
    responses={
        200: {
            "description": "The message as relayed (or as it would be), byte for byte.",
            "content": {"message/rfc822": {"schema": {"type": "string"}}},
        },
        **responses(401, 404, 422, 429),
    },
)
async def get_raw(
    message_id: MessageId, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> Response:
    raw = await views.raw_message(session, account.account_id, message_id, rt.box, rt.settings)
    return Response(raw, media_type="message/rfc822")
