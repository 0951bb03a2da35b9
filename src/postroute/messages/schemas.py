"""Requests and replies of ``POST /v1/send`` and ``POST /v1/send/batch``.

Validation reports every problem of a request at once: a single
``pydantic.ValidationError`` whose errors carry field paths (turn it into the
API's ``details`` with :func:`postroute.api.errors.pydantic_details`).
Unknown fields are rejected, so a misspelt ``"htlm"`` is an error, not a
message without a body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails

from postroute.kit import text as t
from postroute.messages import validation as v
from postroute.messages.fields import (
    STRICT,
    Address,
    AddressList,
    Attachment,
    BodyText,
    HeaderName,
    Mailbox,
    MetadataKey,
    MetadataValue,
    NoTemplates,
    NotScheduled,
    PoolRef,
    RecipientKind,
    SingleLine,
    Subject,
    Tag,
)


def _given(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": [field], "properties": {field: schema}}


# What the whole-request checks ask, for the JSON schema: a recipient, and a body.
_NEEDS: JsonDict = {
    "allOf": [
        {"anyOf": [_given(f, {"minItems": 1}) for f in ("to", "cc", "bcc")]},
        {"anyOf": [_given(f, {"pattern": t.NOT_BLANK_PATTERN}) for f in ("html", "text")]},
    ]
}
_RECIPIENTS = "Up to 50 addresses; at least one recipient in to, cc or bcc."
_BODY = "`html` and/or `text` is required."
_POOL = "Pool id or name; left out: the default pool, else the first active one."
_OPENS = "An open pixel in the HTML part. Left out: the account's `track_opens`."
_CLICKS = (
    "The HTML part's http(s) links go through the tracking host (not those with a "
    "`data-pr-notrack` attribute). Left out: the account's `track_clicks`."
)
_UNSUBSCRIBE = (
    "`List-Unsubscribe` (https and mailto) and `List-Unsubscribe-Post` (one-click, "
    "RFC 8058) headers, unless `headers` has a List-Unsubscribe of its own. Left out: the "
    "account's `unsubscribe_header`."
)


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
        WithJsonSchema(t.one_line_map({"pattern": v.HEADER_NAME_PATTERN})),
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
            t.one_line_map({"pattern": t.TEXT_PATTERN, "maxLength": v.MAX_METADATA_KEY_LENGTH})
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
    track_opens: bool | None = Field(default=None, description=_OPENS)
    track_clicks: bool | None = Field(default=None, description=_CLICKS)
    unsubscribe: bool | None = Field(default=None, description=_UNSUBSCRIBE)
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

    model_config = STRICT

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


class SentMessage(BaseModel):
    """One recipient's message: ``id`` is the Postroute message id, ``message_id`` the
    ``Message-ID`` header it will carry. ``error`` is set when nothing is sent to this
    recipient: ``recipient_suppressed`` (its message is recorded ``dropped``)."""

    id: str = Field(
        description="The Postroute message id.", examples=["msg_0123456789ABCDEFGHIJKLMNOP"]
    )
    to: str = Field(examples=["customer@example.org"])
    message_id: str = Field(
        description="Its Message-ID header.",
        examples=["<msg_0123456789ABCDEFGHIJKLMNOP@example.com>"],
    )
    error: str | None = Field(
        default=None,
        description="Set when nothing is sent to this recipient: `recipient_suppressed`.",
        examples=["recipient_suppressed"],
    )
    suppression_reason: str | None = Field(
        default=None,
        description="With `recipient_suppressed`: `hard_bounce`, `complaint`, "
        "`unsubscribe` or `manual`.",
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


@dataclass(frozen=True)
class MessageFilter:
    status: str | None = None
    to: str | None = None
    tag: str | None = None
    pool_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
