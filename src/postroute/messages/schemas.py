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
    ModelWrapValidatorHandler,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails

from postroute.messages import validation as v

RecipientKind = Literal["to", "cc", "bcc"]

SingleLine = Annotated[str, AfterValidator(v.single_line)]
EmailText = Annotated[str, AfterValidator(v.email_address)]
BodyText = Annotated[str, AfterValidator(v.body_text)]
Subject = Annotated[str, AfterValidator(v.subject)]
Tag = Annotated[str, AfterValidator(v.tag)]
HeaderName = Annotated[str, AfterValidator(v.header_name)]
MetadataKey = Annotated[str, AfterValidator(v.metadata_key)]
PoolRef = Annotated[str, AfterValidator(v.pool_ref)]
Filename = Annotated[str, AfterValidator(v.filename)]
ContentType = Annotated[str, AfterValidator(v.content_type)]
ContentId = Annotated[str, AfterValidator(v.content_id)]
Base64Content = Annotated[
    bytes,
    BeforeValidator(v.base64_content),
    PlainSerializer(lambda data: base64.b64encode(data).decode("ascii"), return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]
# Not implemented yet: accepted as absent when null, an error otherwise.
NotScheduled = Annotated[
    Any, BeforeValidator(v.not_available("scheduled sending (send_at) is not available yet"))
]
NoTemplates = Annotated[
    Any,
    BeforeValidator(v.not_available("templates (template_id, variables) are not available yet")),
]

_STRICT = ConfigDict(extra="forbid")
_MIMETYPES = mimetypes.MimeTypes()  # the built-in table only: the same answer on every host


class Address(BaseModel):
    """A mailbox: ``{"email", "name"}`` or, on input, ``"a@b"`` / ``"Name <a@b>"``.

    ``email`` is normalised (domain lower-cased, Unicode NFC); internationalised
    addresses are allowed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: EmailText
    name: Annotated[str | None, AfterValidator(v.display_name)] = None

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


AddressList = Annotated[list[Address], BeforeValidator(_one_or_many)]


class Attachment(BaseModel):
    """A file; with ``content_id`` it is an inline image referenced as ``cid:<content_id>``.

    ``content`` is base64 in JSON (raw bytes when built in Python); ``content_type``
    defaults to a guess from the filename.
    """

    model_config = _STRICT

    filename: Filename
    content: Base64Content
    content_type: ContentType | None = None
    content_id: ContentId | None = None

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


class SendRequest(BaseModel):
    """Body of ``POST /v1/send`` (and one entry of a batch).

    ``from`` may be omitted: the service then uses the pool's ``from_email``.
    ``pool`` also answers to ``alias_id`` and ``ippool``. Validation reports every
    problem at once (see :meth:`_validate_all`).
    """

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    from_: Address | None = Field(default=None, alias="from")
    to: AddressList = Field(default_factory=list, json_schema_extra={"maxItems": v.MAX_RECIPIENTS})
    cc: AddressList = Field(default_factory=list, json_schema_extra={"maxItems": v.MAX_RECIPIENTS})
    bcc: AddressList = Field(default_factory=list, json_schema_extra={"maxItems": v.MAX_RECIPIENTS})
    reply_to: AddressList = Field(
        default_factory=list, json_schema_extra={"maxItems": v.MAX_RECIPIENTS}
    )
    subject: Subject
    html: BodyText | None = None
    text: BodyText | None = None
    headers: dict[HeaderName, SingleLine] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list, json_schema_extra={"maxItems": v.MAX_TAGS})
    metadata: dict[MetadataKey, str] = Field(default_factory=dict)
    pool: PoolRef | None = None
    alias_id: PoolRef | None = Field(default=None, exclude=True, description="alias of pool")
    ippool: PoolRef | None = Field(default=None, exclude=True, description="alias of pool")
    track_opens: bool | None = None
    track_clicks: bool | None = None
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

    messages: list[SendRequest] = Field(json_schema_extra={"minItems": 1, "maxItems": v.MAX_BATCH})

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
    code: str
    message: str


class SentMessage(BaseModel):
    """One recipient's message: ``id`` is the Postroute message id, ``message_id`` the
    ``Message-ID`` header it will carry. ``error`` is set (and nothing is sent) when this
    recipient was refused, e.g. ``{"code": "recipient_suppressed", ...}``."""

    id: str
    to: str
    message_id: str
    error: SendError | None = None


class SendResponse(BaseModel):
    """``202`` reply of ``POST /v1/send``: ``{"id": batch_id, "messages": [...]}``, one
    entry per recipient in :meth:`SendRequest.recipients` order."""

    id: str
    messages: list[SentMessage]


class SendBatchResponse(BaseModel):
    """``202`` reply of ``POST /v1/send/batch``::

        {"data": [{"id": "batch_...", "messages": [{"id", "to", "message_id"}, ...]}, ...]}

    ``data[i]`` answers ``messages[i]`` of the request, in order, each exactly as
    ``POST /v1/send`` would have.
    """

    data: list[SendResponse]
