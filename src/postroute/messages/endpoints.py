"""HTTP routes: ``POST /v1/send``, ``/v1/send/batch`` and ``/v1/messages``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError

from postroute.api.deps import AccountDep, RuntimeDep, SessionDep
from postroute.db import begin_read
from postroute.messages import service, views
from postroute.messages.repository import MessageFilter
from postroute.messages.schemas import (
    SendBatchRequest,
    SendBatchResponse,
    SendRequest,
    SendResponse,
)
from postroute.messages.views import MessageDetail, MessageList

router = APIRouter(tags=["messages"])
JSON = "application/json"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="A retried request with the same key within 24 h returns the first reply.",
    ),
]


async def _send(
    request: Request,
    requests: list[SendRequest],
    batch: bool,
    key: str | None,
    account: AccountDep,
    session: SessionDep,
    rt: RuntimeDep,
) -> Response:
    ttl = timedelta(hours=rt.settings.idempotency_hours)
    body_hash = service.request_hash(await request.body()) if key else ""

    async def replay(*, write: bool = True) -> JSONResponse | None:
        if not key:
            return None
        found = await service.idempotent_replay(
            session, account.account_id, key, body_hash, rt.clock, ttl, forget=write
        )
        if found is None:
            return None
        headers = {"Idempotent-Replayed": "true"}
        return JSONResponse(found.response, status_code=found.status_code, headers=headers)

    # Read first (a replay answers before the pools are checked again), then compose
    # outside any transaction: SQLite has one writer, and the write below is inserts only.
    await begin_read(session)
    if (replayed := await replay(write=False)) is not None:
        return replayed
    pools = await service.account_pools(session, account.account_id)
    await session.commit()
    now = rt.clock.now()
    subs = service.plan_requests(account.account_id, requests, pools, now, batch=batch)
    prepared = service.prepare(subs, now)  # rows and replies, before the write lock
    reply: SendResponse | SendBatchResponse = (
        SendBatchResponse.model_construct(data=prepared.replies) if batch else prepared.replies[0]
    )
    body = reply.model_dump_json().encode()  # pydantic's serialiser: no dict, no json.dumps
    for _ in range(2):  # a second pass when a concurrent duplicate won the race
        if (replayed := await replay()) is not None:
            return replayed
        try:
            await service.store_prepared(session, prepared)
            if key:  # on PostgreSQL a concurrent duplicate key fails here, at the INSERT
                payload: dict[str, Any] = json.loads(body)
                await service.remember(
                    session, account.account_id, key, body_hash, 202, payload, rt.clock
                )
            await session.commit()
        except IntegrityError:
            await session.rollback()
            if not key:
                raise
            continue
        rt.wake_worker()
        return Response(body, status_code=status.HTTP_202_ACCEPTED, media_type=JSON)
    raise RuntimeError("idempotency race could not be resolved")  # pragma: no cover


@router.post(
    "/v1/send",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SendResponse,
    summary="Send a message",
)
async def send(
    request: Request,
    body: SendRequest,
    account: AccountDep,
    session: SessionDep,
    rt: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """One message record per recipient; the prepared MIME is stored before the 202."""
    return await _send(request, [body], False, idempotency_key, account, session, rt)


@router.post(
    "/v1/send/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SendBatchResponse,
    summary="Send up to 500 messages",
)
async def send_batch(
    request: Request,
    body: SendBatchRequest,
    account: AccountDep,
    session: SessionDep,
    rt: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """All or nothing: one invalid message rejects the batch, with every problem listed."""
    return await _send(request, body.messages, True, idempotency_key, account, session, rt)


@router.get("/v1/messages", response_model=MessageList, summary="List messages")
async def list_messages(
    account: AccountDep,
    session: SessionDep,
    status_: Annotated[str | None, Query(alias="status")] = None,
    to: str | None = None,
    tag: str | None = None,
    pool: Annotated[str | None, Query(description="Pool id")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MessageList:
    f = MessageFilter(status=status_, to=to, tag=tag, pool_id=pool, since=since, until=until)
    return await views.list_messages(session, account.account_id, f, cursor, limit)


@router.get("/v1/messages/{message_id}", response_model=MessageDetail, summary="Get a message")
async def get_message(message_id: str, account: AccountDep, session: SessionDep) -> MessageDetail:
    return await views.message_detail(session, account.account_id, message_id)


@router.get(
    "/v1/messages/{message_id}/raw",
    summary="The prepared MIME",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}},
)
async def get_raw(message_id: str, account: AccountDep, session: SessionDep) -> Response:
    raw = await views.raw_message(session, account.account_id, message_id)
    return Response(raw, media_type="message/rfc822")
