"""Requests and replies of ``POST /v1/send`` and ``POST /v1/send/batch``.

Validation reports every problem of a request at once: a single
``pydantic.ValidationError`` whose errors carry field paths (turn it into the
API's ``details`` with :func:`postroute.messages.validation.validation_details`).
Unknown fields are rejected, so a misspelt ``"htlm"`` is an error, not a
message without a body.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Callable, Mapping
from email.headerregistry import Address as MailboxHeader
from typing import Annotated, Any, Literal, Self, TypeVar

from email_validator import validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema, InitErrorDetails

from postroute.messages import validation as v

RecipientKind = Literal["to", "cc", "bcc"]

# Header-bound text: one line, no control character but tab (the JSON schema says so too).
SingleLine = Annotated[str, AfterValidator(v.single_line), v.NO_CONTROL]
EmailText = Annotated[str, AfterValidator(v.email_address), v.JsonSchemaExtra(format="email")]
BodyText = Annotated[str, AfterValidator(v.body_text)]
Subject = Annotated[str, AfterValidator(v.subject), v.TEXT]
Tag = Annotated[str, AfterValidator(v.tag), v.text(v.MAX_TAG_LENGTH)]
HeaderName = Annotated[str, AfterValidator(v.header_name), v.HEADER_NAME_SCHEMA]
MetadataKey = Annotated[str, AfterValidator(v.metadata_key), v.text(v.MAX_METADATA_KEY_LENGTH)]
MetadataValue = Annotated[str, AfterValidator(v.metadata_value), v.NO_CONTROL]
PoolRef = Annotated[str, AfterValidator(v.pool_ref), v.text(v.MAX_POOL_REF_LENGTH)]
Filename = Annotated[str, AfterValidator(v.filename), v.text(v.MAX_FILENAME_LENGTH)]
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

_STRICT = ConfigDict(extra="forbid")
_MIMETYPES = mimetypes.MimeTypes()  # the built-in table only: the same answer on every host


class Address(BaseModel):
    """A mailbox: ``{"email", "name"}`` or, on input, ``"a@b"`` / ``"Name <a@b>"``.

    ``email`` is normalised (domain lower-cased, Unicode NFC); internationalised
    addresses are allowed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: EmailText = Field(examples=["shop@example.com"])
    name: Annotated[str | None, AfterValidator(v.display_name), v.text(v.MAX_NAME_LENGTH)] = Field(
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
        named = {"type": "string", "pattern": "<[^<>]+@[^<>]+>$", "examples": [_NAMED]}
        return {"anyOf": [bare, named, handler(core)]}


class _OneOrMany:
    """JSON schema of a list that also takes one item alone."""

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        many = {**handler(core), "maxItems": v.MAX_RECIPIENTS}
        return {"anyOf": [*many["items"]["anyOf"], many]}


_NAMED = "Shop <shop@example.com>"
Mailbox = Annotated[Address, _OrString()]
AddressList = Annotated[list[Mailbox], BeforeValidator(_one_or_many), _OneOrMany()]


class Attachment(BaseModel):
    """A file; with ``content_id`` it is an inline image referenced as ``cid:<content_id>``.

    ``content`` is base64 in JSON (raw bytes when built in Python); ``content_type``
    defaults to a guess from the filename.
    """

    model_config = _STRICT

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


def _given(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": [field], "properties": {field: schema}}


# What the whole-request checks ask, for the JSON schema: a recipient, and a body.
_NEEDS: JsonDict = {
    "allOf": [
        {"anyOf": [_given(f, {"minItems": 1}) for f in ("to", "cc", "bcc")]},
        {"anyOf": [_given(f, {"pattern": v.NOT_BLANK_PATTERN}) for f in ("html", "text")]},
    ]
}
_RECIPIENTS = "Up to 50 addresses; at least one recipient in to, cc or bcc."
_BODY = "`html` and/or `text` is required."
_POOL = "Pool id or name; left out: the default pool, else the first active one."
_TRACKING = "Recorded with the message (tracking itself is not available yet)."


class SendRequest(BaseModel):
    """Body of ``POST /v1/send`` (and one entry of a batch).

    ``from`` may be omitted: the service then uses the pool's ``from_email``.
    ``pool`` also answers to ``alias_id`` and ``ippool``. Validation reports every
    problem at once.
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        json_schema_extra=_NEEDS,
    )

    from_: Mailbox | None = Field(
        default=None, alias="from", description="Left out: the pool's `from_email`."
    )
    to: AddressList = Field(default_factory=list, description=_RECIPIENTS)
    cc: AddressList = Field(default_factory=list, description=_RECIPIENTS)
    bcc: AddressList = Field(default_factory=list, description=f"{_RECIPIENTS} Never in headers.")
    reply_to: AddressList = Field(default_factory=list, description="Up to 50 addresses.")
    subject: Subject = Field(description="One line, not blank.", examples=["Your order"])
    html: BodyText | None = Field(default=None, examples=["<p>Thanks!</p>"])
    text: BodyText | None = Field(default=None, description=_BODY, examples=["Thanks!"])
    headers: Annotated[
        dict[HeaderName, SingleLine],
        WithJsonSchema(v.one_line_map({"pattern": v.HEADER_NAME_PATTERN})),
    ] = Field(
        default_factory=dict,
        description="Custom headers; not those Postroute writes (From, Message-ID...).",
        examples=[{"X-Campaign": "spring"}],
    )
    attachments: list[Attachment] = Field(
        default_factory=list, description="Files; those with a `content_id` are inline images."
    )
    tags: list[Tag] = Field(
        default_factory=list,
        description="Up to 5, each one line of 100 characters at most.",
        examples=[["receipt"]],
        json_schema_extra={"maxItems": v.MAX_TAGS},
    )
    metadata: Annotated[
        dict[MetadataKey, MetadataValue],
        WithJsonSchema(
            v.one_line_map({"pattern": v.TEXT_PATTERN, "maxLength": v.MAX_METADATA_KEY_LENGTH})
        ),
    ] = Field(
        default_factory=dict,
        description="One-line strings, 10,000 bytes in all.",
        examples=[{"order": "1234"}],
    )
    pool: PoolRef | None = Field(default=None, description=_POOL, examples=["ses"])
    # Accepted for compatibility, not in the OpenAPI document: `pool` says it.
    alias_id: SkipJsonSchema[PoolRef | None] = Field(default=None, exclude=True)
    ippool: SkipJsonSchema[PoolRef | None] = Field(default=None, exclude=True)
    track_opens: bool | None = Field(default=None, description=_TRACKING)
    track_clicks: bool | None = Field(default=None, description=_TRACKING)
    send_at: NotScheduled = None
    template_id: NoTemplates = None
    variables: NoTemplates = None

    @model_validator(mode="wrap")
    @classmethod
    def _validate_all(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        return _with_whole_checks(cls, data, handler, v.send_problems)

    @model_validator(mode="after")
    def _resolve_pool_alias(self) -> Self:
        # Keep one canonical field (the one serialised): fold an alias into it.
        self.pool = self.pool or self.alias_id or self.ippool
        self.alias_id = self.ippool = None
        return self

    @property
    def sender(self) -> Address | None:
        """The From address, or None when the request leaves it to the pool's default."""
        return self.from_

    @property
    def pool_ref(self) -> str | None:
        """The pool id or name asked for (through whichever alias it came), or None."""
        return self.pool

    @property
    def body_attachments(self) -> list[Attachment]:
        return [a for a in self.attachments if not a.inline]

    @property
    def inline_attachments(self) -> list[Attachment]:
        return [a for a in self.attachments if a.inline]

    def recipients(self) -> list[tuple[RecipientKind, Address]]:
        """Every envelope recipient once: to, then cc, then bcc; the first occurrence of an
        address (compared case-insensitively) wins."""
        seen: set[str] = set()
        found: list[tuple[RecipientKind, Address]] = []
        lists: tuple[tuple[RecipientKind, list[Address]], ...] = (
            ("to", self.to),
            ("cc", self.cc),
            ("bcc", self.bcc),
        )
        for kind, addresses in lists:
            for address in addresses:
                key = address.email.casefold()
                if key not in seen:
                    seen.add(key)
                    found.append((kind, address))
        return found


class SendBatchRequest(BaseModel):
    """Body of ``POST /v1/send/batch``: ``{"messages": [SendRequest, ...]}``, 1 to 500.

    The batch is validated as a whole: one problem anywhere rejects it, and the
    error lists every problem with paths such as ``messages[3].subject``.
    """

    model_config = _STRICT

    messages: list[SendRequest] = Field(
        description="1 to 500 messages.", json_schema_extra={"minItems": 1, "maxItems": v.MAX_BATCH}
    )

    @model_validator(mode="wrap")
    @classmethod
    def _validate_all(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        return _with_whole_checks(cls, data, handler, v.batch_problems)


M = TypeVar("M", bound=BaseModel)
Checks = Callable[[Mapping[str, Any]], list[InitErrorDetails]]


def _with_whole_checks(
    cls: type[M], data: Any, handler: ModelWrapValidatorHandler[M], checks: Checks
) -> M:
    """Run the field validation and the whole-request ``checks``; raise both sets together."""
    extra = checks(data) if isinstance(data, Mapping) else []
    try:
        model = handler(data)
    except ValidationError as exc:
        raise v.merge(cls.__name__, exc, extra, _field_order(cls)) from None
    if extra:
        raise v.merge(cls.__name__, None, extra, _field_order(cls))
    return model


def _field_order(cls: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in cls.model_fields.items()]


class SendError(BaseModel):
    code: str = Field(examples=["recipient_suppressed"])
    message: str = Field(description="For people.")


class SentMessage(BaseModel):
    """One recipient's message: ``id`` is the Postroute message id, ``message_id`` the
    ``Message-ID`` header it will carry. ``error`` is set (and nothing is sent) when this
    recipient was refused, e.g. ``{"code": "recipient_suppressed", ...}``."""

    id: str = Field(
        description="The Postroute message id.", examples=["msg_0123456789ABCDEFGHIJKLMNOP"]
    )
    to: str = Field(examples=["customer@example.org"])
    message_id: str = Field(
        description="Its Message-ID header.",
        examples=["<msg_0123456789ABCDEFGHIJKLMNOP@example.com>"],
    )
    error: SendError | None = Field(
        default=None, description="Set when this recipient was refused: nothing is sent to it."
    )


class SendResponse(BaseModel):
    """``202`` reply of ``POST /v1/send``: ``{"id": batch_id, "messages": [...]}``, one
    entry per recipient in :meth:`SendRequest.recipients` order."""

    id: str = Field(description="The batch id.", examples=["batch_0123456789ABCDEFGHIJKLMNOP"])
    messages: list[SentMessage] = Field(description="One per recipient.")


class SendBatchResponse(BaseModel):
    """``202`` reply of ``POST /v1/send/batch``::

        {"data": [{"id": "batch_...", "messages": [{"id", "to", "message_id"}, ...]}, ...]}

    ``data[i]`` answers ``messages[i]`` of the request, in order, each exactly as
    ``POST /v1/send`` would have.
    """

    data: list[SendResponse] = Field(description="`data[i]` answers `messages[i]`.")
