"""The data dir and the SQLite files are private to the user that runs Postroute, the
files SQLite makes later (-wal, -shm) included, whatever the umask."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from postroute import migrate
from postroute.config import Settings
from postroute.runtime import Runtime


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual one, which leaves new files readable by all
    yield
    os.umask(old)


def settings_for(data: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=data, **values)  # type: ignore[call-arg]


async def write_once(settings: Settings) -> None:
    """Open the database as every process does (Runtime), migrate and write."""
    rt = Runtime.build(settings)
    try:
        await migrate.upgrade(rt.engine)
        async with rt.engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE IF NOT EXISTS probe (x)"))
            await conn.execute(sa.text("INSERT INTO probe VALUES (1)"))
            files = {p.name: mode(p) for p in settings.data_dir.iterdir() if p.is_file()}
    finally:
        await rt.close()
    # while the connection was open: the WAL and its index, as private as the database
    assert files == {
        "postroute.db": 0o600,
        "postroute.db-wal": 0o600,
        "postroute.db-shm": 0o600,
        "secret_key": 0o600,
    }


async def test_a_new_data_dir_and_its_database_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await write_once(settings_for(data))
    assert mode(data) == 0o700
    assert not (data / "postroute.db-wal").exists()  # removed by the last close
    await write_once(settings_for(data))  # -wal and -shm made again: private again


async def test_a_readable_data_dir_is_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    conn = sqlite3.connect(data / "postroute.db")  # as an earlier version left it
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    (data / "secret_key").write_text("k" * 40 + "\n")
    (data / "tls").mkdir(mode=0o755)
    (data / "tls" / "smtp-key.pem").write_text("key")
    (data / "tls" / "smtp-cert.pem").write_text("certificate")
    try:
        assert mode(data / "postroute.db-wal") == 0o644
        with caplog.at_level(logging.WARNING, "postroute"):
            await write_once(settings_for(data))
    finally:
        conn.close()
    assert mode(data) == 0o700
    assert mode(data / "tls") == 0o700
    assert mode(data / "tls" / "smtp-key.pem") == 0o600
    assert mode(data / "tls" / "smtp-cert.pem") == 0o644  # public, in a private dir
    assert f"data dir {data} was 0755: now 0700" in caplog.messages
    for name in ("secret_key", "postroute.db", "postroute.db-wal", "postroute.db-shm"):
        assert f"file {data / name} was 0644: now 0600" in caplog.messages


async def test_a_data_dir_holding_other_files_is_left_to_the_operator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "srv"
    shared.mkdir(mode=0o755)
    (shared / "unrelated.txt").write_text("not ours")
    with caplog.at_level(logging.WARNING, "postroute"):
        settings = settings_for(shared)
        assert settings.db_url.endswith("/srv/postroute.db")
    assert mode(shared) == 0o755
    assert mode(shared / "postroute.db") == 0o600
    assert any(f"chmod 700 {shared}" in m for m in caplog.messages), caplog.messages


async def test_a_database_named_by_url_is_private_and_its_directory_untouched(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "db"
    elsewhere.mkdir(mode=0o755)
    url = f"sqlite+aiosqlite:///{elsewhere / 'mail.db'}"
    settings = settings_for(tmp_path / "data", database_url=url, secret_key="k" * 40)
    rt = Runtime.build(settings)
    try:
        await migrate.upgrade(rt.engine)
        assert mode(elsewhere / "mail.db-wal") == 0o600
    finally:
        await rt.close()
    assert mode(elsewhere / "mail.db") == 0o600
    assert mode(elsewhere) == 0o755
    assert not (tmp_path / "data").exists()  # neither the database nor the key needs it
