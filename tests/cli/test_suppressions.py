"""``postroute suppressions``: a CSV import (checked whole first, with its bad rows
listed by line and nothing imported), list, add, remove."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import cli


def test_a_csv_is_imported_and_listed(cli_env: Path, tmp_path: Path) -> None:
    cli("init")
    rows = "\n".join(f"user{i}@Example.org,hard_bounce" for i in range(2500))
    csv = tmp_path / "list.csv"
    csv.write_text("email,reason\n" + rows + "\nann@example.org,\n")
    out = cli("suppressions", "import", str(csv))
    assert "imported 2501 addresses" in out
    listed = cli("suppressions", "list", "--limit", "5000").splitlines()
    assert len(listed) == 2501
    assert listed[0].startswith("ann@example.org  manual  import  ")
    assert "never expires" in listed[0]
    assert listed[-1].startswith("user0@example.org  hard_bounce  import  ")
    assert " expires " in listed[-1]  # hard bounces expire as the relay's do
    only = cli("suppressions", "list", "--reason", "manual").splitlines()
    assert only == [listed[0]]


def test_one_bad_row_and_nothing_is_imported(cli_env: Path, tmp_path: Path) -> None:
    cli("init")
    csv = tmp_path / "list.csv"
    csv.write_text("email\nok@example.org\nnot an address\nalso@example.org\n")
    out = cli("suppressions", "import", str(csv), code=2)
    assert "line 3: 'not an address': invalid email address" in out
    assert "1 bad rows: nothing imported" in out
    assert cli("suppressions", "list").strip() == "the suppression list is empty"
    missing = cli("suppressions", "import", str(tmp_path / "nope.csv"), code=2)
    assert "does not exist" in missing


def test_add_and_remove_by_hand(cli_env: Path) -> None:
    cli("init")
    assert cli("suppressions", "add", "Someone@EXAMPLE.org").strip() == (
        "Someone@example.org: manual"
    )
    assert "invalid email address" in cli("suppressions", "add", "nobody", code=2)
    assert cli("suppressions", "remove", "Someone@example.ORG").strip() == (
        "removed Someone@example.ORG"
    )
    out = cli("suppressions", "remove", "Someone@example.org", code=1)
    assert "Someone@example.org is not on the suppression list" in out
