"""How long a worker's claim takes with N queued messages (issue: fast with a million).

    python bench/claim_scale.py --count 1000000 --db sqlite
    python bench/claim_scale.py --count 1000000 --db postgresql://postgres@127.0.0.1:5432

Fills a fresh database (migrated with Alembic) with N messages and queue rows, all due,
then times claims of --batch rows (the worker's query, through the project's repository)
and prints the median and the 95th percentile, plus the query plan on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import sqlalchemy as sa

from postroute import migrate
from postroute.db import create_engine, session_factory, transaction
from postroute.delivery import repository as queue
from postroute.models import Delivery, Message, MessageContent

CHUNK = 5000


async def fill(url: str, count: int) -> None:
    engine = create_engine(url)
    await migrate.upgrade(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    async with transaction(sessions) as s:
        await s.execute(
            sa.insert(MessageContent),
            [{"id": "cnt_1", "account_id": "acct_1", "mime": b"x", "size": 1, "created_at": now}],
        )
    for start in range(0, count, CHUNK):
        ids = [f"msg_{i:012d}" for i in range(start, min(start + CHUNK, count))]
        messages = [
            {
                "id": m,
                "account_id": "acct_1",
                "batch_id": "b",
                "content_id": "cnt_1",
                "source": "api",
                "from_email": "a@example.com",
                "to_email": "b@example.org",
                "recipient_type": "to",
                "subject": "s",
                "message_id_header": "<x>",
                "metadata_": {},
                "status": "queued",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for m in ids
        ]
        rows = [
            {
                "message_id": m,
                "account_id": "acct_1",
                "pool_id": None,
                "state": "queued",
                "next_attempt_at": now - timedelta(seconds=i % 3600),
                "attempts": 0,
                "created_at": now,
            }
            for i, m in enumerate(ids)
        ]
        async with transaction(sessions) as s:
            await s.execute(sa.insert(Message), messages)
            await s.execute(sa.insert(Delivery), rows)
    await engine.dispose()


async def measure(url: str, batch: int, rounds: int) -> list[float]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    times = []
    for i in range(rounds):
        started = time.perf_counter()
        async with transaction(sessions) as s:
            claimed = await queue.claim(
                s, f"bench-{i}", datetime.now(UTC), timedelta(minutes=5), batch
            )
        times.append((time.perf_counter() - started) * 1000)
        assert len(claimed) == batch
    if url.startswith("postgresql"):
        async with engine.connect() as conn:
            plan = await conn.execute(
                sa.text(
                    "EXPLAIN SELECT message_id FROM deliveries WHERE next_attempt_at <= now() "
                    "ORDER BY next_attempt_at LIMIT 200 FOR UPDATE SKIP LOCKED"
                )
            )
            print("\n".join(r[0] for r in plan))
    await engine.dispose()
    return times


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--db", default="sqlite", help="sqlite or a postgresql://... server URL")
    a = p.parse_args()
    if a.db == "sqlite":
        tmp = tempfile.mkdtemp()
        url = f"sqlite+aiosqlite:///{os.path.join(tmp, 'claim.db')}"
        cleanup = None
    else:
        name = f"postroute_claim_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(f"{a.db}/postgres")
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+asyncpg://{a.db.split('://', 1)[1]}/{name}"
        cleanup = (admin, name)
    try:
        started = time.perf_counter()
        await fill(url, a.count)
        print(f"filled {a.count} queued messages in {time.perf_counter() - started:.0f} s")
        times = sorted(await measure(url, a.batch, a.rounds))
        p95 = times[int(len(times) * 0.95) - 1]
        print(
            f"claim of {a.batch} with {a.count} queued ({a.db.split(':')[0]}): "
            f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms"
        )
    finally:
        if cleanup:
            admin, name = cleanup
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
