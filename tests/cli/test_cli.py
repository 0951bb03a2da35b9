"""The command line: init, accounts, keys, pools (with a real connection test), send."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import cli
from tests.support.fixtures import RelayFactory


def test_init_json_then_if_needed(cli_env: Path) -> None:
    out = json.loads(cli("init", "--json"))
    assert set(out) == {"account_id", "api_key", "dashboard_email", "dashboard_password"}
    assert out["api_key"].startswith("pr_live_")
    secret = cli_env / "secret_key"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert cli("init", "--if-needed") == ""
    again = cli("init", code=1)
    assert "already initialised" in again
    assert "postroute keys create" in again and "--if-needed" in again


def test_accounts_and_keys(cli_env: Path) -> None:
    cli("init")
    assert "pr_live_" in cli("accounts", "create", "globex")
    assert "globex" in cli("accounts", "list")
    assert "several accounts" in cli("keys", "list", code=2)  # a missing choice: invalid input
    key_id = cli("keys", "create", "--account", "globex").split()[0]
    assert key_id.startswith("key_")
    assert "active" in cli("keys", "list", "--account", "globex")
    cli("keys", "revoke", key_id, "--account", "globex")
    assert "revoked" in cli("keys", "list", "--account", "globex")
    assert "no API key" in cli("keys", "revoke", "key_nope", "--account", "globex", code=1)
    assert "no account" in cli("keys", "list", "--account", "initech", code=1)


def test_pools_add_list_test_and_send(cli_env: Path, relay_factory: RelayFactory) -> None:
    relay = relay_factory(tls="starttls", auth={"user": "relay-pass"})
    cli("init")
    out = cli(
        "pools",
        "add",
        "--name",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(relay.port),
        "--username",
        "user",
        "--from-email",
        "app@example.com",
        stdin="relay-pass\n",
    )
    assert "(default)" in out and "relay-pass" not in out
    listed = cli("pools", "list")
    assert "local" in listed and "healthy" in listed
    ok = cli("pools", "test", "local")
    assert ok.startswith("OK")
    assert "relay-pass" not in ok
    cli("pools", "test", "local", "--recipient", "ops@example.org")
    assert [list(m.rcpt_tos) for m in relay.wait_for(1)] == [["ops@example.org"]]

    bad = cli(
        "pools", "add", "--name", "x", "--host", "h", "--port", "0", "--encryption", "tls1", code=2
    )
    assert "port" in bad and "encryption" in bad
    assert "no SMTP pool" in cli("pools", "test", "nope", code=1)

    send = ("send", "--to", "a@example.org", "--subject", "Hi", "--text", "Hello")
    refused = cli(*send, code=1)  # a new account sends from verified domains only
    assert "the From domain example.com is not verified" in refused
    assert cli("accounts", "set", "default", "--no-require-verified-domain") == (
        "default: require_verified_domain=false track_opens=false track_clicks=false "
        "unsubscribe_header=false\n"
    )
    sent = cli(*send)
    assert sent.split()[0].startswith("msg_") and "queued" in sent
    invalid = cli("send", "--to", "nope", "--subject", "", code=2)
    assert "to[0]" in invalid and "subject" in invalid


def test_pools_test_reports_failure(cli_env: Path, closed_port: int) -> None:
    cli("init")
    cli(
        "pools",
        "add",
        "--name",
        "down",
        "--host",
        "127.0.0.1",
        "--port",
        str(closed_port),
        "--encryption",
        "none",
    )
    out = cli("pools", "test", "down", code=1)
    assert out.startswith("FAILED  smtp_connection_error")
