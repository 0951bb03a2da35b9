"""The field types of a send request: addresses (a string or an object), attachments,
and every checked text field, each with the JSON-schema keywords that tell the OpenAPI
document the same rule (the checks are :mod:`postroute.messages.validation`'s)."""

from __future__ import annotations

import base64
import mimetypes
from email.headerregistry import Address as MailboxHeader
from typing import Annotated, Any, Literal, Self

from email_validator import validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from postroute.kit import text as t
from postroute.messages import validation as v

RecipientKind = Literal["to", "cc", "bcc"]

# Header-bound text: one line, no control character but tab (the JSON schema says so too).
SingleLine = Annotated[str, AfterValidator(t.single_line), t.NO_CONTROL]
EmailText = t.EmailText
BodyText = Annotated[str, AfterValidator(t.body_text)]
Subject = Annotated[str, AfterValidator(v.subject), t.TEXT]
Tag = Annotated[str, AfterValidator(v.tag), t.text(v.MAX_TAG_LENGTH)]
HeaderName = Annotated[str, AfterValidator(v.header_name), v.HEADER_NAME_SCHEMA]
MetadataKey = Annotated[str, AfterValidator(v.metadata_key), t.text(v.MAX_METADATA_KEY_LENGTH)]
MetadataValue = Annotated[str, AfterValidator(v.metadata_value), t.NO_CONTROL]
PoolRef = Annotated[str, AfterValidator(v.pool_ref), t.text(v.MAX_POOL_REF_LENGTH)]
Filename = Annotated[str, AfterValidator(v.filename), t.text(v.MAX_FILENAME_LENGTH)]
ContentType = Annotated[str, AfterValidator(v.content_type), v.CONTENT_TYPE_SCHEMA]
ContentId = Annotated[str, AfterValidator(v.content_id), v.CONTENT_ID_SCHEMA]
Base64Content = Annotated[
    bytes,
    BeforeValidator(v.base64_content),
    PlainSerializer(lambda data: base64.b64encode(data).decode("ascii"), return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]
# Not implemented yet: accepted as absent when null, an error otherwise.
_LATER = WithJsonSchema({"type": "null", "description": "Not available yet: leave out or null."})
NotScheduled = Annotated[
    Any,
    BeforeValidator(v.not_available("scheduled sending (send_at) is not available yet")),
    _LATER,
]
NoTemplates = Annotated[
    Any,
    BeforeValidator(v.not_available("templates (template_id, variables) are not available yet")),
    _LATER,
]

STRICT = ConfigDict(extra="forbid")
_MIMETYPES = mimetypes.MimeTypes()  # the built-in table only: the same answer on every host


class Address(BaseModel):
    """A mailbox: ``{"email", "name"}`` or, on input, ``"a@b"`` / ``"Name <a@b>"``.

    ``email`` is normalised (domain lower-cased, Unicode NFC); internationalised
    addresses are allowed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: EmailText = Field(examples=["shop@example.com"])
    name: Annotated[str | None, AfterValidator(v.display_name), t.text(v.MAX_NAME_LENGTH)] = Field(
        default=None, description="Display name, one line.", examples=["Shop"]
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return v.parse_address(data) if isinstance(data, str) else data

    @property
    def ascii_email(self) -> str | None:
        """The address with an IDNA (``xn--``) domain; None when the local part is not
        ASCII (such an address needs SMTPUTF8)."""
        if self.email.isascii():  # already its own ASCII form (the common case: no IDNA work)
            return self.email
        result = validate_email(self.email, check_deliverability=False, test_environment=True)
        return result.ascii_email

    def formatted(self) -> str:
        """``Name <a@b>`` (quoted as needed) or ``a@b``; Unicode left as is."""
        local, _, domain = self.email.rpartition("@")
        return str(MailboxHeader(display_name=self.name or "", username=local, domain=domain))


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | dict | Address) else value


class _OrString:
    """JSON schema of a mailbox: ``"a@b"``, ``"Name <a@b>"`` or an :class:`Address`."""

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        bare = {"type": "string", "format": "email", "examples": ["shop@example.com"]}
        named = {"type": "string", "pattern": "<[^<>]+@[^<>]+>$", "examples": [NAMED]}
        return {"anyOf": [bare, named, handler(core)]}


class _OneOrMany:
    """JSON schema of a list that also takes one item alone."""

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        many = {**handler(core), "maxItems": v.MAX_RECIPIENTS}
        return {"anyOf": [*many["items"]["anyOf"], many]}


NAMED = "Shop <shop@example.com>"
Mailbox = Annotated[Address, _OrString()]
AddressList = Annotated[list[Mailbox], BeforeValidator(_one_or_many), _OneOrMany()]


class Attachment(BaseModel):
    """A file; with ``content_id`` it is an inline image referenced as ``cid:<content_id>``.

    ``content`` is base64 in JSON (raw bytes when built in Python); ``content_type``
    defaults to a guess from the filename.
    """

    model_config = STRICT

    filename: Filename = Field(examples=["receipt.pdf"])
    content: Base64Content = Field(description="The file, base64.", examples=["JVBERi0xLjQK"])
    content_type: ContentType | None = Field(
        default=None, description="Guessed from the filename when left out.", examples=["image/png"]
    )
    content_id: ContentId | None = Field(
        default=None,
        description="Makes it inline: `cid:<content_id>` in the HTML.",
        examples=["logo"],
    )

    @model_validator(mode="after")
    def _default_content_type(self) -> Self:
        if self.content_type is None:
            self.content_type = guess_content_type(self.filename)
        return self

    @property
    def inline(self) -> bool:
        return self.content_id is not None

    @property
    def mime_type(self) -> tuple[str, str]:
        """``("image", "png")``: the content type split for the email package."""
        resolved = self.content_type or guess_content_type(self.filename)
        maintype, _, subtype = resolved.partition("/")
        return maintype, subtype


def guess_content_type(filename: str) -> str:
    guessed, encoding = _MIMETYPES.guess_type(filename, strict=True)
    if encoding == "gzip":
        return "application/gzip"
    if guessed is None or encoding is not None or guessed.split("/")[0] in ("message", "multipart"):
        return "application/octet-stream"
    return guessed
