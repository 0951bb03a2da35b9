"""Transactions: a read started with ``begin_read`` does not wait for a writer."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from postroute.api.runtime import Runtime
from postroute.db import begin_read, create_engine, session_factory, transaction
from postroute.models import Account


async def test_a_read_does_not_wait_for_another_process_holding_the_write_lock(
    runtime: Runtime,
) -> None:
    other = create_engine(runtime.settings.db_url)  # another connection, as another process
    try:
        async with transaction(session_factory(other)) as writer:
            await writer.execute(sa.select(Account.id))  # BEGIN IMMEDIATE: lock taken
            async with runtime.sessions() as reader:
                await begin_read(reader)
                read = reader.execute(sa.select(sa.func.count()).select_from(Account))
                assert (await asyncio.wait_for(read, 5)).scalar_one() >= 0
                await reader.commit()
    finally:
        await other.dispose()


async def test_the_next_transaction_is_a_normal_one_again(runtime: Runtime) -> None:
    async with runtime.sessions() as session:
        await begin_read(session)
        await session.execute(sa.select(Account.id))
        await session.commit()
        conn = await session.connection()
        assert conn.sync_connection is not None
        assert not conn.sync_connection.get_execution_options().get("postroute_read_only")
        await session.rollback()
