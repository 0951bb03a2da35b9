"""Two worker processes on PostgreSQL + Redis share one pool's daily and rate limits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from postroute.runtime import Runtime
from tests.conftest import BACKEND, Tenant
from tests.delivery.conftest import add_pool
from tests.support.relay import RecordingRelay

LIMIT, RATE = 60, 20  # daily limit and messages per second of the shared pool
REDIS_URL = os.environ.get("POSTROUTE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


pytestmark = pytest.mark.skipif(
    BACKEND != "postgresql" or not redis_up(), reason="needs PostgreSQL and Redis"
)


def start_worker(runtime: Runtime, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "POSTROUTE_DATABASE_URL": runtime.settings.db_url,
        "POSTROUTE_REDIS_URL": REDIS_URL,
        "POSTROUTE_SECRET_KEY": runtime.settings.secret_keys[0],
        "POSTROUTE_DATA_DIR": str(tmp_path / name),
        "POSTROUTE_WORKER_POLL_SECONDS": "0.1",
        "POSTROUTE_WORKER_BATCH_SIZE": "50",
        "POSTROUTE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "postroute", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def test_two_workers_share_daily_and_rate_limits(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    tmp_path: Path,
) -> None:
    pool = await add_pool(
        client,
        tenant,
        relay.port,
        daily_limit=LIMIT,
        rate_limit={"per_second": RATE},
        max_connections=3,
        failover=False,
    )
    msgs = [
        {"from": "shop@example.com", "to": [f"u{i}@example.org"], "subject": "Hi", "text": "x"}
        for i in range(3 * LIMIT)
    ]
    reply = await client.post("/v1/send/batch", json={"messages": msgs}, headers=tenant.headers)
    assert reply.status_code == 202

    workers = [start_worker(runtime, tmp_path, f"w{i}") for i in range(2)]
    try:
        await asyncio.to_thread(relay.wait_for, LIMIT, 90)
        await asyncio.sleep(2)  # anything beyond the limit would arrive now
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=60)[0].decode() for proc in workers]
    assert [p.returncode for p in workers] == [0, 0], outputs

    received = relay.messages
    recipients = [r for m in received for r in m.rcpt_tos]
    assert len(recipients) == LIMIT
    assert len(set(recipients)) == LIMIT  # none twice
    assert len({m.session_id for m in received}) >= 2  # both processes sent
    times = sorted(m.received_monotonic for m in received)
    for i in range(len(times) - RATE):
        assert times[i + RATE] - times[i] >= 1.0
    view = (await client.get(f"/v1/smtp-pools/{pool['id']}", headers=tenant.headers)).json()
    assert view["usage"]["sent_today"] == LIMIT
    assert view["usage"]["remaining_today"] == 0
    waiting = await client.get(
        "/v1/messages", params={"status": "deferred", "limit": 500}, headers=tenant.headers
    )
    assert len(waiting.json()["data"]) == 2 * LIMIT
