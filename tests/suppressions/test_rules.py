"""The suppression list's pure rules: how addresses are keyed, which relay replies are
hard bounces of the recipient, and the CSV import's checks."""

from __future__ import annotations

import pytest

from postroute.suppressions import imports
from postroute.suppressions.rules import enhanced_status, key, suppresses


def test_the_domain_is_case_insensitive_and_the_local_part_exact() -> None:
    assert key("Jane.Doe@Example.ORG") == "Jane.Doe@example.org"
    assert key("jane.doe@example.org") != key("Jane.Doe@example.org")
    assert key(' "a@b"@Example.org ') == '"a@b"@example.org'  # the last @ splits


@pytest.mark.parametrize(
    ("code", "text", "hard"),
    [
        (550, "5.1.1 <x@example.org>: Recipient address rejected: User unknown", True),
        (550, "5.1.10 Recipient address rejected: null MX", True),
        (553, "5.1.3 bad destination mailbox address syntax", True),
        (550, "5.2.1 The email account that you tried to reach is disabled", True),
        (550, "5.1.8 Sender address rejected: Domain not found", False),  # the sender's
        (550, "5.1.7 bad sender's mailbox address syntax", False),
        (550, "5.7.1 Message rejected due to policy", False),  # policy: never
        (552, "5.2.2 Mailbox full", False),  # capacity: the next one may go
        (554, "5.7.26 DMARC policy violation", False),
        (550, "User unknown", False),  # no enhanced code: nothing says it was the address
        (450, "4.1.1 try later", False),
        (550, "5.1.1x not a status", False),
    ],
)
def test_only_recipient_level_permanent_replies_are_hard_bounces(
    code: int, text: str, hard: bool
) -> None:
    assert suppresses(code, text) is hard


def test_the_enhanced_status_is_read_from_the_reply_text() -> None:
    assert enhanced_status("5.1.1 User unknown") == "5.1.1"
    assert enhanced_status("  5.7.26 DMARC") == "5.7.26"
    assert enhanced_status("User unknown") is None


def test_an_import_with_a_header_reads_its_email_and_reason_columns() -> None:
    data = (
        "\ufeffName,Email,Reason\r\n"
        "Ann,ann@Example.org,hard_bounce\r\n"
        "\r\n"
        "Bob,bob@example.org,\r\n"
        "Ann again,ann@example.ORG,complaint\r\n"
    ).encode()
    parsed = imports.parse(data)
    assert parsed.problems == []
    assert parsed.rows == [
        {"email": "ann@example.org", "reason": "complaint", "source": "import"},
        {"email": "bob@example.org", "reason": "manual", "source": "import"},
    ]


def test_an_import_without_a_header_takes_the_first_column() -> None:
    parsed = imports.parse(b"a@example.org\nb@example.org,whatever\n")
    assert [r["email"] for r in parsed.rows] == ["a@example.org", "b@example.org"]


def test_every_bad_row_is_reported_with_its_line() -> None:
    data = b"email,reason\nok@example.org,manual\nnot-an-address,manual\nx@example.org,spam\n"
    parsed = imports.parse(data)
    assert parsed.bad_rows == 2
    assert parsed.problems[0].startswith("line 3: 'not-an-address': invalid email address")
    assert parsed.problems[1] == (
        "line 4: reason 'spam': must be one of hard_bounce, complaint, unsubscribe, manual"
    )
    assert imports.parse(b"ok@example.org\n\xff\xfe\n").problems == ["line 2: not UTF-8"]
