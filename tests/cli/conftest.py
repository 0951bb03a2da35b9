"""The command line's fixtures: a data dir and database of the test's own."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postroute.cli import app
from tests.conftest import BACKEND, _truncate
from tests.support.fixtures import RelayCA


@pytest.fixture
def cli_env(
    database_url: str, tmp_path: Path, relay_ca: RelayCA, monkeypatch: pytest.MonkeyPatch
) -> Path:
    if BACKEND != "sqlite":
        asyncio.run(_truncate(database_url))
    data = tmp_path / "cli-data"
    monkeypatch.setenv("POSTROUTE_DATA_DIR", str(data))
    monkeypatch.setenv("POSTROUTE_DATABASE_URL", database_url)
    monkeypatch.setenv("POSTROUTE_RELAY_CA_FILE", str(relay_ca.ca_file))
    monkeypatch.setenv("POSTROUTE_SMTP_TIMEOUT_SECONDS", "3")
    monkeypatch.delenv("POSTROUTE_SECRET_KEY", raising=False)
    return data


@pytest.fixture
def bare_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own and no POSTROUTE_* setting: the defaults, as a
    first-time user has them (embedded SQLite in ./postroute-data)."""
    for name in [n for n in os.environ if n.startswith("POSTROUTE_")]:
        if name not in ("POSTROUTE_TEST_DATABASE", "POSTROUTE_TEST_PG"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def cli(*args: str, code: int = 0, stdin: str | None = None) -> str:
    """Run ``postroute ARGS`` in this process; its stdout and stderr (Typer's usage errors
    in a box as wide as a wide terminal's, whatever this one's: a narrow one cuts them)."""
    wide = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    result = CliRunner(env=wide).invoke(app, list(args), input=stdin)
    assert result.exit_code == code, (result.output, result.exception)
    return result.output
