"""Send request schemas: what is accepted, normalised, and every problem reported."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from postroute.api.errors import pydantic_details
from postroute.messages.fields import Address
from postroute.messages.schemas import (
    SendBatchRequest,
    SendBatchResponse,
    SendRequest,
    SendResponse,
    SentMessage,
)
from postroute.messages.validation import MAX_METADATA_BYTES


def request(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "from": "sender@example.com",
        "to": ["rcpt@example.com"],
        "subject": "Hello",
        "text": "Hi there",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def problems(data: Any, model: type[BaseModel] = SendRequest) -> list[dict[str, str]]:
    """The 422 details of a JSON body; Python input gets the same problems at the same paths."""
    with pytest.raises(ValidationError) as json_error:
        model.model_validate_json(json.dumps(data))
    with pytest.raises(ValidationError) as python_error:
        model.model_validate(data)
    details = pydantic_details(json_error.value.errors())
    python_details = pydantic_details(python_error.value.errors())
    assert [d["field"] for d in python_details] == [d["field"] for d in details]
    return details


def by_field(data: Any, model: type[BaseModel] = SendRequest) -> dict[str, str]:
    details = problems(data, model)
    fields = [d["field"] for d in details]
    assert len(fields) == len(set(fields)), details
    return {d["field"]: d["message"] for d in details}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- accepted input and accessors -------------------------------------------------------


def test_minimal_request_is_normalised() -> None:
    req = SendRequest.model_validate(request(to="Rcpt@Example.COM"))
    assert req.sender == Address(email="sender@example.com")
    assert req.to == [Address(email="Rcpt@example.com")]  # domain lower-cased, local part kept
    assert req.pool_ref is None
    assert req.track_opens is None and req.track_clicks is None


@pytest.mark.parametrize(
    ("given", "email", "name"),
    [
        ("a@example.com", "a@example.com", None),
        ("Ann Smith <a@example.com>", "a@example.com", "Ann Smith"),
        ('"Smith, Ann" <a@example.com>', "a@example.com", "Smith, Ann"),
        ('"Say \\"hi\\"" <a@example.com>', "a@example.com", 'Say "hi"'),
        ("Zoë Ünïcødé <zoe@example.com>", "zoe@example.com", "Zoë Ünïcødé"),
        ("<a@example.com>", "a@example.com", None),
        ({"email": "a@example.com", "name": " 日本語 "}, "a@example.com", "日本語"),
        ({"email": "a@example.com", "name": ""}, "a@example.com", None),
        ("用户@例子.广告", "用户@例子.广告", None),
        ("a@BÜCHER.example", "a@bücher.example", None),
    ],
)
def test_address_forms(given: Any, email: str, name: str | None) -> None:
    req = SendRequest.model_validate(request(**{"from": given}))
    assert req.sender == Address(email=email, name=name)


def test_address_ascii_form_and_formatting() -> None:
    assert Address(email="a@bücher.example").ascii_email == "a@xn--bcher-kva.example"
    assert Address(email="用户@例子.广告").ascii_email is None
    assert Address(email="a@example.com", name="Smith, Ann").formatted() == (
        '"Smith, Ann" <a@example.com>'
    )
    assert Address(email="a@example.com", name="Zoë").formatted() == "Zoë <a@example.com>"
    assert Address(email="a@example.com").formatted() == "a@example.com"
    assert Address.model_validate("Ann <a@example.com>").formatted() == "Ann <a@example.com>"


def test_recipients_in_order_without_duplicates() -> None:
    req = SendRequest.model_validate(
        request(
            to=["a@example.com", "B@example.com", "a@example.com"],
            cc=[{"email": "b@EXAMPLE.com", "name": "Dup"}, "c@example.com"],
            bcc=["C@example.com", "d@example.com"],
        )
    )
    assert [(kind, a.email) for kind, a in req.recipients()] == [
        ("to", "a@example.com"),
        ("to", "B@example.com"),
        ("cc", "c@example.com"),
        ("bcc", "d@example.com"),
    ]


def test_single_addresses_become_lists() -> None:
    req = SendRequest.model_validate(
        request(to={"email": "a@example.com"}, cc="c@example.com", reply_to="r@example.com")
    )
    assert [a.email for a in req.to] == ["a@example.com"]
    assert [a.email for a in req.cc] == ["c@example.com"]
    assert [a.email for a in req.reply_to] == ["r@example.com"]


def test_from_may_be_left_to_the_pool() -> None:
    assert SendRequest.model_validate(request(**{"from": ...})).sender is None


def test_only_bcc_is_enough() -> None:
    req = SendRequest.model_validate(request(to=..., bcc=["hidden@example.com"]))
    assert req.recipients() == [("bcc", Address(email="hidden@example.com"))]


@pytest.mark.parametrize("key", ["pool", "alias_id", "ippool"])
def test_pool_and_its_aliases(key: str) -> None:
    req = SendRequest.model_validate(request(**{key: " ses-eu "}))
    assert req.pool_ref == "ses-eu"
    assert req.model_dump()["pool"] == "ses-eu"
    assert "alias_id" not in req.model_dump() and "ippool" not in req.model_dump()


def test_pool_aliases_agreeing_are_fine() -> None:
    assert SendRequest.model_validate(request(pool="p", ippool="p", alias_id="p")).pool_ref == "p"


def test_pool_aliases_disagreeing_are_an_error() -> None:
    assert by_field(request(pool="a", alias_id="b")) == {
        "alias_id": "alias_id and pool name different pools; give only one"
    }
    assert list(by_field(request(ippool="a", alias_id="b"))) == ["ippool"]


def test_attachments_decoded_and_typed() -> None:
    payload = bytes(range(256))
    wrapped = "\n".join(b64(payload)[i : i + 76] for i in range(0, len(b64(payload)), 76))
    req = SendRequest.model_validate(
        request(
            attachments=[
                {"filename": "report.pdf", "content": wrapped},
                {"filename": "logo.PNG", "content": b64(b"png"), "content_id": "<logo@x>"},
                {"filename": "data", "content": "", "content_type": "Text/CSV"},
                {"filename": "archive.tar.gz", "content": b64(b"gz")},
                {"filename": "mail.eml", "content": b64(b"eml")},
            ]
        )
    )
    pdf, logo, data, archive, eml = req.attachments
    assert pdf.content == payload and pdf.content_type == "application/pdf" and not pdf.inline
    assert logo.content_type == "image/png" and logo.content_id == "logo@x" and logo.inline
    assert data.content == b"" and data.content_type == "text/csv"
    assert data.mime_type == ("text", "csv")
    assert archive.content_type == "application/gzip"
    assert eml.content_type == "application/octet-stream"  # never message/* by guess
    assert req.inline_attachments == [logo]
    assert req.body_attachments == [pdf, data, archive, eml]


def test_request_round_trips_through_json() -> None:
    original = SendRequest.model_validate(
        request(
            attachments=[{"filename": "a.bin", "content": b64(b"\x00\xff")}],
            headers={"X-Campaign": "spring"},
            tags=["welcome"],
            metadata={"user": "42"},
            alias_id="p1",
            track_opens=True,
        )
    )
    dumped = original.model_dump_json()
    assert json.loads(dumped)["from"] == {"email": "sender@example.com", "name": None}
    assert SendRequest.model_validate_json(dumped) == original


def test_raw_bytes_accepted_from_python() -> None:
    req = SendRequest.model_validate(
        request(attachments=[{"filename": "a.bin", "content": b"\x00raw"}])
    )
    assert req.attachments[0].content == b"\x00raw"


# --- one problem at a time --------------------------------------------------------------

LINE_BREAK = "must not contain line breaks (CR, LF) or NUL characters"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"headers": {"X-Note": "a\r\nBcc: victim@example.com"}}, "headers.X-Note"),
        ({"headers": {"X-Note": "a\nb"}}, "headers.X-Note"),
        ({"subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "Hi\x00"}, "subject"),
        ({"to": [{"email": "a@example.com", "name": "Evil\r\nBcc: v@example.com"}]}, "to[0].name"),
        ({"to": ["ok@example.com", "Evil\nBcc: v@example.com <a@example.com>"]}, "to[1]"),
        ({"from": {"email": "a@example.com\r\nBcc: v@example.com"}}, "from.email"),
        ({"cc": [{"email": "a@example.com\n"}]}, "cc[0].email"),
        ({"reply_to": "r@example.com\r"}, "reply_to[0]"),
        ({"attachments": [{"filename": "a\r\n.txt", "content": ""}]}, "attachments[0].filename"),
        ({"tags": ["ok", "bad\ntag"]}, "tags[1]"),
        ({"pool": "p\r\n"}, "pool"),
    ],
)
def test_line_breaks_are_header_injection(changes: dict[str, Any], field: str) -> None:
    assert by_field(request(**changes)) == {field: LINE_BREAK}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"to": ["not-an-address"]}, "to[0]"),
        ({"to": [{"email": "a@b"}]}, "to[0].email"),
        ({"to": ["ok@example.com", "two@@example.com"]}, "to[1]"),
        ({"cc": ["ok@example.com", {"email": "a@localhost"}]}, "cc[1].email"),
        ({"bcc": "Name <nope>"}, "bcc[0]"),
        ({"from": "spaces in@example.com"}, "from"),
        ({"reply_to": [{"email": ""}]}, "reply_to[0].email"),
    ],
)
def test_invalid_addresses(changes: dict[str, Any], field: str) -> None:
    found = by_field(request(**changes))
    assert list(found) == [field]
    assert found[field].startswith("invalid email address: ")


def test_domain_checks_are_remembered_but_never_let_a_bad_address_through() -> None:
    check = sys.modules["email_validator.validate_email"].validate_email_domain_name
    SendRequest.model_validate(request(to=["first@remembered.example"]))
    hits = check.cache_info().hits
    req = SendRequest.model_validate(request(to=["second@REMEMBERED.example"]))
    assert req.to == [Address(email="second@remembered.example")]
    assert check.cache_info().hits > hits  # the domain was not checked again
    assert by_field(request(to=["bad local@remembered.example"])) == {
        "to[0]": "invalid email address: The email address contains invalid characters before"
        " the @-sign: SPACE."
    }
    for _ in range(2):  # an invalid domain is not remembered as valid
        assert list(by_field(request(to=["a@localhost"]))) == ["to[0]"]


def test_display_name_length() -> None:
    SendRequest.model_validate(request(to=[{"email": "a@example.com", "name": "n" * 256}]))
    assert by_field(request(to=[{"email": "a@example.com", "name": "n" * 257}])) == {
        "to[0].name": "name must be at most 256 characters"
    }


def test_address_object_needs_an_email() -> None:
    assert by_field(request(to=[{"name": "Ann"}])) == {"to[0].email": "Field required"}


@pytest.mark.parametrize("subject", ["", "   ", "\t"])
def test_empty_subject(subject: str) -> None:
    assert by_field(request(subject=subject)) == {"subject": "subject must not be empty"}


def test_subject_required() -> None:
    assert by_field(request(subject=...)) == {"subject": "Field required"}


@pytest.mark.parametrize(
    "changes",
    [{"text": ...}, {"text": ""}, {"text": "  ", "html": None}, {"text": None, "html": ""}],
)
def test_a_body_is_required(changes: dict[str, Any]) -> None:
    assert by_field(request(**changes)) == {"html": "html or text is required (at least one)"}


@pytest.mark.parametrize("changes", [{"text": ..., "html": "<p>hi</p>"}, {"html": "<p>x</p>"}])
def test_html_alone_or_with_text(changes: dict[str, Any]) -> None:
    SendRequest.model_validate(request(**changes))


def test_body_text_must_be_valid_unicode() -> None:
    with pytest.raises(ValidationError) as error:
        SendRequest.model_validate(request(text="broken \ud800 surrogate"))
    assert pydantic_details(error.value.errors()) == [
        {"field": "text", "message": "contains invalid Unicode (a lone surrogate)"}
    ]


def test_tags() -> None:
    SendRequest.model_validate(request(tags=["a", "b", "c", "d", "t" * 100]))
    assert by_field(request(tags=list("abcdef"))) == {"tags": "at most 5 tags, got 6"}
    assert by_field(request(tags=["ok", " "])) == {"tags[1]": "tag must not be empty"}
    assert by_field(request(tags=["t" * 101])) == {"tags[0]": "tag must be at most 100 characters"}


@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
def test_at_most_50_recipients_per_list(field: str) -> None:
    addresses = [f"user{i}@example.com" for i in range(51)]
    SendRequest.model_validate(request(**{field: addresses[:50]}))
    assert by_field(request(**{field: addresses})) == {
        field: f"at most 50 addresses in {field}, got 51"
    }


def test_at_least_one_recipient() -> None:
    expected = {"to": "at least one recipient is required (to, cc or bcc)"}
    assert by_field(request(to=...)) == expected
    assert by_field(request(to=[], cc=[], bcc=[])) == expected


def test_invalid_base64_attachment() -> None:
    found = by_field(request(attachments=[{"filename": "a.bin", "content": "not base64!"}]))
    assert found == {"attachments[0].content": "content is not valid base64"}
    assert list(by_field(request(attachments=[{"filename": "a", "content": "abc"}]))) == [
        "attachments[0].content"  # bad padding
    ]


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("pdf", "content_type must be type/subtype (e.g. application/pdf)"),
        ("text/plain; charset=utf-8", "content_type must be type/subtype (e.g. application/pdf)"),
        ("message/rfc822", "multipart/* and message/* attachments are not supported;"),
        ("multipart/mixed", "multipart/* and message/* attachments are not supported;"),
    ],
)
def test_attachment_content_type(content_type: str, message: str) -> None:
    attachment = {"filename": "a", "content": "", "content_type": content_type}
    found = by_field(request(attachments=[attachment]))
    assert found["attachments[0].content_type"].startswith(message)


def test_attachment_content_id() -> None:
    def attachment(cid: str) -> dict[str, str]:
        return {"filename": "a.png", "content": "", "content_id": cid}

    assert list(by_field(request(attachments=[attachment("has space")]))) == [
        "attachments[0].content_id"
    ]
    assert by_field(request(attachments=[attachment("logo"), attachment("<logo>")])) == {
        "attachments[1].content_id": "content_id 'logo' is used by another attachment"
    }


@pytest.mark.parametrize(
    "name",
    [
        "Message-ID",
        "message-id",
        "Date",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
        "X-Postroute-Message-ID",
        "x-postroute-anything",
        "DKIM-Signature",
        "Return-Path",
    ],
)
def test_headers_postroute_owns(name: str) -> None:
    assert by_field(request(headers={name: "x"})) == {
        f"headers.{name}": f"the {name} header is set by Postroute and cannot be overridden"
    }


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("From", "from"),
        ("to", "to"),
        ("Cc", "cc"),
        ("BCC", "bcc"),
        ("Subject", "subject"),
        ("Reply-To", "reply_to"),
    ],
)
def test_headers_with_a_field_of_their_own(name: str, field: str) -> None:
    assert by_field(request(headers={name: "x"})) == {
        f"headers.{name}": f"the {name} header cannot be set here; use the {field} field"
    }


@pytest.mark.parametrize("name", ["Bad Name", "X-Colon:", "", "X-Ünï", "X-Tab\t"])
def test_header_names_must_be_rfc5322_field_names(name: str) -> None:
    field = f"headers.{name}" if name else 'headers[""]'
    assert by_field(request(headers={name: "x"})) == {
        field: f"{name!r} is not a valid header name (printable ASCII without spaces or ':')"
    }


def test_custom_headers_accepted() -> None:
    headers = {
        "X-Campaign": "spring",
        "List-Unsubscribe": "<https://example.com/u/1>",
        "X-Unicode": "Zoë",
    }
    assert SendRequest.model_validate(request(headers=headers)).headers == headers


def test_headers_given_twice() -> None:
    assert by_field(request(headers={"X-A": "1", "x-a": "2"})) == {
        "headers.x-a": "the x-a header is given more than once"
    }


def test_metadata() -> None:
    SendRequest.model_validate(request(metadata={"k" * 100: "v", "user": "42"}))
    assert by_field(request(metadata={"k" * 101: "v"})) == {
        f"metadata.{'k' * 101}": "metadata key must be at most 100 characters"
    }
    empty_key = by_field(request(metadata={"": "v"}))
    assert empty_key == {'metadata[""]': "metadata key must not be empty"}
    assert by_field(request(metadata={"n": 1})) == {"metadata.n": "Input should be a valid string"}
    found = by_field(request(metadata={"big": "x" * MAX_METADATA_BYTES}))
    assert found == {"metadata": "metadata must be at most 10000 bytes in all, got 10003"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("send_at", "2026-12-01T10:00:00Z", "scheduled sending (send_at) is not available yet"),
        ("template_id", "tmpl_1", "templates (template_id, variables) are not available yet"),
        ("variables", {"name": "Ann"}, "templates (template_id, variables) are not available yet"),
    ],
)
def test_not_available_yet(field: str, value: Any, message: str) -> None:
    assert by_field(request(**{field: value})) == {field: message}
    SendRequest.model_validate(request(**{field: None}))


def test_a_template_stands_in_for_the_body_in_the_message() -> None:
    # The missing body is not reported on top of "templates are not available".
    assert list(by_field(request(text=..., template_id="tmpl_1"))) == ["template_id"]


def test_unknown_fields_are_rejected() -> None:
    assert by_field(request(htlm="<p>typo</p>")) == {"htlm": "Extra inputs are not permitted"}


# --- every problem at once --------------------------------------------------------------


def test_every_problem_reported_with_its_path() -> None:
    data = {
        "from": {"email": "not-an-address", "name": "Eve\r\n"},
        "to": ["ok@example.com", "ok2@example.com", {"email": "bad@"}],
        "cc": [f"cc{i}@example.com" for i in range(51)],
        "subject": " ",
        "headers": {"X-Foo": "a\nb", "Message-ID": "<x@y>"},
        "attachments": [{"filename": "a.png", "content": "%%%"}],
        "tags": ["a", "b", "c", "d", "e", "f"],
        "pool": "one",
        "ippool": "two",
        "send_at": "tomorrow",
    }
    found = by_field(data)
    assert list(found) == [
        "from.email",
        "from.name",
        "to[2].email",
        "cc",
        "subject",
        "html",
        "headers.X-Foo",
        "headers.Message-ID",
        "attachments[0].content",
        "tags",
        "ippool",
        "send_at",
    ]
    assert found["html"] == "html or text is required (at least one)"
    assert found["cc"] == "at most 50 addresses in cc, got 51"


def test_whole_request_checks_reported_even_when_fields_fail() -> None:
    found = by_field({"subject": 5, "tags": list("abcdef")})
    assert found == {
        "to": "at least one recipient is required (to, cc or bcc)",
        "subject": "Input should be a valid string",
        "html": "html or text is required (at least one)",
        "tags": "at most 5 tags, got 6",
    }


def test_not_an_object() -> None:
    assert problems(["a list"]) == [{"field": "", "message": "Input should be an object"}]


# --- batches ----------------------------------------------------------------------------


def test_batch() -> None:
    batch = SendBatchRequest.model_validate({"messages": [request(), request(subject="Two")]})
    assert [m.subject for m in batch.messages] == ["Hello", "Two"]


def test_batch_size() -> None:
    assert by_field({"messages": []}, SendBatchRequest) == {
        "messages": "at least one message is required"
    }
    assert by_field({"messages": [request()] * 501}, SendBatchRequest) == {
        "messages": "at most 500 messages per batch, got 501"
    }
    SendBatchRequest.model_validate({"messages": [request()] * 500})


def test_batch_reports_every_problem_of_every_message() -> None:
    messages = [
        request(),
        request(to=["ok@example.com", "bad"]),
        "not an object",
        request(subject=..., tags=list("abcdef")),
        request(to=..., text=...),
    ]
    found = by_field({"messages": messages, "extra": 1}, SendBatchRequest)
    assert found == {
        "messages[1].to[1]": "invalid email address: An email address must have an @-sign.",
        "messages[2]": "Input should be an object",
        "messages[3].subject": "Field required",
        "messages[3].tags": "at most 5 tags, got 6",
        "messages[4].to": "at least one recipient is required (to, cc or bcc)",
        "messages[4].html": "html or text is required (at least one)",
        "extra": "Extra inputs are not permitted",
    }


# --- validation_details on other errors -------------------------------------------------


class _Framed(BaseModel):
    """Shaped like FastAPI's body errors: locations start with "body"."""

    body: SendRequest


def test_details_drop_a_leading_body() -> None:
    with pytest.raises(ValidationError) as error:
        _Framed.model_validate({"body": request(subject="")})
    assert pydantic_details(error.value.errors()) == [
        {"field": "subject", "message": "subject must not be empty"}
    ]


def test_invalid_json() -> None:
    with pytest.raises(ValidationError) as error:
        SendRequest.model_validate_json("{not json")
    [detail] = pydantic_details(error.value.errors())
    assert detail["field"] == "" and detail["message"].startswith("the body is not valid JSON")


# --- replies ----------------------------------------------------------------------------


def test_reply_shapes() -> None:
    sent = SentMessage(id="msg_1", to="a@example.com", message_id="<msg_1@example.com>")
    reply = SendResponse(id="batch_1", messages=[sent])
    assert reply.model_dump(exclude_none=True) == {
        "id": "batch_1",
        "messages": [{"id": "msg_1", "to": "a@example.com", "message_id": "<msg_1@example.com>"}],
    }
    batch = SendBatchResponse(data=[reply, reply])
    assert batch.model_dump(exclude_none=True)["data"][1]["id"] == "batch_1"
