"""What a first-time user meets on the command line: the data dir a command looks for,
a second init, errors that say each reason once, exit status 2 for invalid input and 1
for a refused operation, --version."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.cli.conftest import cli

SEND = ("send", "--to", "a@example.org", "--subject", "Hi", "--text", "Hello")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_version() -> None:
    out = cli("--version")
    assert out == f"postroute {version('postroute')}\n"


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "list"),
        ("accounts", "list"),
        ("pools", "list"),
        ("ip-credentials", "list"),
        SEND,
        ("migrate",),
    ],
)
def test_a_command_run_elsewhere_makes_no_data_dir(bare_env: Path, args: tuple[str, ...]) -> None:
    out = cli(*args, code=1)
    assert f"no data dir at {bare_env / 'postroute-data'}" in out
    assert "POSTROUTE_DATA_DIR" in out and "postroute init" in out
    assert list(bare_env.iterdir()) == []  # nothing created


@pytest.mark.parametrize("command", ["worker", "api", "smtp"])
def test_a_process_started_elsewhere_makes_no_data_dir(bare_env: Path, command: str) -> None:
    # A subprocess: were it to start instead, it would run until the timeout.
    done = subprocess.run(
        [sys.executable, "-m", "postroute", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"error: no data dir at {bare_env / 'postroute-data'}" in done.stderr
    assert list(bare_env.iterdir()) == []


def test_the_data_dir_named_by_the_setting_is_not_made_either(
    bare_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTROUTE_DATA_DIR", str(bare_env / "nope"))
    out = cli("keys", "list", code=1)
    assert f"no data dir at {bare_env / 'nope'} (POSTROUTE_DATA_DIR)" in out
    assert not (bare_env / "nope").exists()


def test_init_makes_a_private_data_dir_that_other_commands_then_use(bare_env: Path) -> None:
    assert "API key:" in cli("init")
    data = bare_env / "postroute-data"
    assert mode(data) == 0o700
    assert mode(data / "postroute.db") == 0o600
    assert mode(data / "secret_key") == 0o600
    assert "init  active" in cli("keys", "list")


def test_a_readable_data_dir_is_made_private_at_start_up(
    bare_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cli("init")
    data = bare_env / "postroute-data"
    data.chmod(0o755)
    for file in data.iterdir():
        file.chmod(0o644)
    with caplog.at_level(logging.WARNING, "postroute"):
        cli("keys", "list")
    assert mode(data) == 0o700
    assert {f.name: mode(f) for f in data.iterdir()} == {
        "postroute.db": 0o600,
        "secret_key": 0o600,
    }
    assert f"data dir {data} was 0755: now 0700" in caplog.messages


def test_a_second_init_points_to_keys_create(cli_env: Path) -> None:
    cli("init")
    again = cli("init", code=1)
    assert "already initialised" in again
    assert "`postroute keys create`" in again and "--if-needed" in again
    assert cli("init", "--if-needed") == ""


def test_each_reason_is_said_once(cli_env: Path) -> None:
    cli("init")
    out = cli(*SEND, "--pool", "nope", code=1)  # a refused operation: no such pool
    assert out.count("no SMTP pool") == 1, out
    out = cli("ip-credentials", "add", "10.0.0.1/8", code=2)
    assert out.count("has host bits set") == 1, out
    assert out.startswith("error: cidr: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("ip-credentials", "add", "not-a-network"), "not an IP address"),
        (("accounts", "create", " "), "account name is required"),
        (("accounts", "create", "a" * 201), "NAME: one line of at most 200"),
        (("keys", "create", "--name", "two\nlines"), "--name: one line"),
        (("init", "--email", "nobody"), "--email"),
        (("pools", "test", "main", "--recipient", "nope"), "recipient"),
        ((*SEND, "--wait", "-5"), "--wait"),
        ((*SEND, "--wait", "nan"), "--wait"),
        ((*SEND, "--wait", "1e9"), "--wait"),
    ],
)
def test_invalid_input_exits_2(cli_env: Path, args: tuple[str, ...], says: str) -> None:
    cli("init")
    out = cli(*args, code=2)
    assert says in out, out


def test_a_choice_left_out_is_invalid_input_and_a_missing_object_is_refused(
    cli_env: Path,
) -> None:
    cli("init")
    cli("accounts", "create", "globex")
    assert "several accounts exist" in cli("keys", "list", code=2)
    assert "no API key" in cli("keys", "revoke", "key_nope", "--account", "globex", code=1)
    assert "no account named" in cli("keys", "list", "--account", "initech", code=1)
    assert "no SMTP pool" in cli("pools", "test", "nope", "--account", "globex", code=1)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"POSTROUTE_RETRY_ATTEMPTS": "0"}, "POSTROUTE_RETRY_ATTEMPTS"),
        ({"POSTROUTE_TLS_CERT": "/etc/hostname"}, "POSTROUTE_TLS_KEY"),
        ({"POSTROUTE_SECRET_KEY": " , "}, "POSTROUTE_SECRET_KEY holds no key"),
        (
            {"POSTROUTE_DATABASE_URL": "postgresql://u:s3cr3t@db:notaport/x"},
            "POSTROUTE_DATABASE_URL: Value error, is not a database URL",
        ),
        ({"POSTROUTE_DATABASE_URL": "nonsense"}, "is not a database URL"),
    ],
)
@pytest.mark.parametrize("command", ["worker", "smtp", "keys"])
def test_an_invalid_setting_exits_2_before_anything_starts(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    says: str,
    command: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ("keys", "list") if command == "keys" else (command,)
    out = cli(*args, code=2)
    assert out.startswith("error: ") and says in out, out
    assert "s3cr3t" not in out
