"""Checks behind the send schemas, and how their problems are reported.

Two kinds of check, so that one request gets every problem at once:

* value checks (one field, one value) run as pydantic validators on the field
  types of ``schemas.py`` and raise :class:`PydanticCustomError`;
* whole-request checks (counts, sizes, combinations of fields) run on the raw
  input in :func:`send_problems` / :func:`batch_problems` whether or not the
  value checks passed, and :func:`merge` folds both into one ``ValidationError``.

``api.errors.pydantic_details`` turns such an error into the ``details`` of the API's 422
envelope.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError, core_schema

from postroute.kit.text import (
    HEADER_NAME,
    JsonSchemaExtra,
    email_address,
    fail,
    short,
    single_line,
)

MAX_RECIPIENTS = 50  # per list: to, cc, bcc (and reply_to)
MAX_TAGS = 5
MAX_TAG_LENGTH = 100
MAX_METADATA_KEY_LENGTH = 100
MAX_METADATA_BYTES = 10_000  # keys and values, UTF-8
MAX_POOL_REF_LENGTH = 200
MAX_FILENAME_LENGTH = 255
MAX_NAME_LENGTH = 256  # display names
MAX_BATCH = 500

# Headers Postroute writes itself. Those with a request field of their own say which.
_FIELD_FOR_HEADER = {
    "from": "from",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "subject": "subject",
    "reply-to": "reply_to",
}
PROTECTED_HEADERS = frozenset(
    {
        *_FIELD_FOR_HEADER,
        *("message-id", "date", "content-type", "content-transfer-encoding", "mime-version"),
        *("return-path", "dkim-signature"),
    }
)
PROTECTED_HEADER_PREFIX = "x-postroute-"

_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")  # atext, '.' and '@'
_NAME_ADDR = re.compile(r"(?s)(?P<name>.*?)\s*<(?P<addr>[^<>]*)>")
HEADER_NAME_PATTERN = r"^[\u0021-\u0039\u003b-\u007e]+$"
HEADER_NAME_SCHEMA = JsonSchemaExtra(pattern=HEADER_NAME_PATTERN)
_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
_COMPOSITE = r"(?:[Mm][Uu][Ll][Tt][Ii][Pp][Aa][Rr][Tt]|[Mm][Ee][Ss][Ss][Aa][Gg][Ee])/"
CONTENT_TYPE_SCHEMA = JsonSchemaExtra(pattern=f"^(?!{_COMPOSITE}){_MIME_NAME}/{_MIME_NAME}$")
CONTENT_ID_SCHEMA = JsonSchemaExtra(pattern=r"^<?[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+>?$")


def problem(
    loc: tuple[str | int, ...], code: str, message: str, value: Any = None
) -> InitErrorDetails:
    """One whole-request problem for :func:`merge`; ``message`` is shown as is."""
    return InitErrorDetails(type=PydanticCustomError(code, message), loc=loc, input=value)


# --- value checks (pydantic validators) -------------------------------------------------


def subject(value: str) -> str:
    if not value.strip():
        fail("subject_empty", "subject must not be empty")
    return single_line(value)


def tag(value: str) -> str:
    return short(value, "tag", MAX_TAG_LENGTH)


def metadata_key(value: str) -> str:
    short(value, "metadata key", MAX_METADATA_KEY_LENGTH)
    return value


def metadata_value(value: str) -> str:
    """One line: metadata also travels in headers (``X-Postroute-Metadata-*``)."""
    return single_line(value)


def pool_ref(value: str) -> str:
    return short(value, "pool", MAX_POOL_REF_LENGTH)


def filename(value: str) -> str:
    return short(value, "filename", MAX_FILENAME_LENGTH)


def display_name(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return short(value, "name", MAX_NAME_LENGTH)


def parse_address(value: str) -> dict[str, str | None]:
    """``a@b``, ``Name <a@b>`` or ``"Last, First" <a@b>`` -> ``{"email", "name"}``."""
    match = _NAME_ADDR.fullmatch(single_line(value).strip())
    if match is None:
        return {"email": email_address(value.strip()), "name": None}
    name = match["name"].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return {"email": email_address(match["addr"].strip()), "name": name or None}


def header_name(value: str) -> str:
    if not HEADER_NAME.fullmatch(value):
        fail(
            "header_name_invalid",
            f"{value!r} is not a valid header name (printable ASCII without spaces or ':')",
        )
    lowered = value.lower()
    if lowered in _FIELD_FOR_HEADER:
        field = _FIELD_FOR_HEADER[lowered]
        fail("header_protected", f"the {value} header cannot be set here; use the {field} field")
    if lowered in PROTECTED_HEADERS or lowered.startswith(PROTECTED_HEADER_PREFIX):
        fail("header_protected", f"the {value} header is set by Postroute and cannot be overridden")
    return value


def content_type(value: str) -> str:
    value = value.strip().lower()
    if not _CONTENT_TYPE.fullmatch(value):
        fail("content_type_invalid", "content_type must be type/subtype (e.g. application/pdf)")
    if value.split("/")[0] in ("multipart", "message"):
        fail(
            "content_type_unsupported",
            "multipart/* and message/* attachments are not supported;"
            " send them as application/octet-stream",
        )
    return value


def content_id(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    if not _CONTENT_ID.fullmatch(value):
        fail(
            "content_id_invalid",
            "content_id may only hold letters, digits and !#$%&'*+-/=?^_`{|}~.@",
        )
    return value


def base64_content(value: Any) -> Any:
    """Strings are base64 (whitespace and line breaks ignored); bytes are the data itself."""
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        fail("base64_invalid", "content is not valid base64")


def not_available(message: str) -> Callable[[Any], None]:
    """For fields that are part of the API but not implemented: null (or {}) means absent."""

    def reject(value: Any) -> None:
        if value is not None and value != {}:
            fail("not_available", message)

    return reject


# --- whole-request checks ---------------------------------------------------------------


def _count(value: Any) -> int:
    return 0 if value is None else len(value) if isinstance(value, list) else 1


def _has_text(value: Any) -> bool:
    # isspace: no stripped copy of a large body just to see whether it is blank
    return value is not None and not (isinstance(value, str) and (not value or value.isspace()))


def send_problems(raw: Mapping[str, Any]) -> list[InitErrorDetails]:
    """Problems of a send request as a whole: counts, sizes, combinations of fields."""
    found = []
    for field in ("to", "cc", "bcc", "reply_to"):
        if (n := _count(raw.get(field))) > MAX_RECIPIENTS:
            message = f"at most {MAX_RECIPIENTS} addresses in {field}, got {n}"
            found.append(problem((field,), "too_many_recipients", message))
    if not any(_count(raw.get(field)) for field in ("to", "cc", "bcc")):
        message = "at least one recipient is required (to, cc or bcc)"
        found.append(problem(("to",), "no_recipients", message))
    if not (_has_text(raw.get("html")) or _has_text(raw.get("text")) or raw.get("template_id")):
        found.append(problem(("html",), "no_body", "html or text is required (at least one)"))
    if (n := _count(raw.get("tags"))) > MAX_TAGS:
        found.append(problem(("tags",), "too_many_tags", f"at most {MAX_TAGS} tags, got {n}"))
    metadata = raw.get("metadata")
    if isinstance(metadata, Mapping):
        size = sum(len(f"{k}{v}".encode(errors="replace")) for k, v in metadata.items())
        if size > MAX_METADATA_BYTES:
            message = f"metadata must be at most {MAX_METADATA_BYTES} bytes in all, got {size}"
            found.append(problem(("metadata",), "metadata_too_large", message))
    headers = raw.get("headers")
    if isinstance(headers, Mapping):
        names = [str(name) for name in headers]
        for i, name in enumerate(names):
            if name.lower() in (seen.lower() for seen in names[:i]):
                message = f"the {name} header is given more than once"
                found.append(problem(("headers", name), "header_duplicate", message))
    pools = [(key, str(raw[key]).strip()) for key in ("pool", "alias_id", "ippool") if raw.get(key)]
    for key, value in pools[1:]:
        if value != pools[0][1]:
            message = f"{key} and {pools[0][0]} name different pools; give only one"
            found.append(problem((key,), "pool_conflict", message))
    attachments = raw.get("attachments")
    if isinstance(attachments, list):
        seen: set[str] = set()
        for i, item in enumerate(attachments):
            cid = item.get("content_id") if isinstance(item, Mapping) else None
            if not isinstance(cid, str):
                continue
            if (cid := cid.strip().strip("<>")) in seen:
                message = f"content_id {cid!r} is used by another attachment"
                loc = ("attachments", i, "content_id")
                found.append(problem(loc, "content_id_duplicate", message))
            seen.add(cid)
    return found


def batch_problems(raw: Mapping[str, Any]) -> list[InitErrorDetails]:
    messages = raw.get("messages")
    if isinstance(messages, list) and not messages:
        return [problem(("messages",), "batch_empty", "at least one message is required")]
    if isinstance(messages, list) and len(messages) > MAX_BATCH:
        message = f"at most {MAX_BATCH} messages per batch, got {len(messages)}"
        return [problem(("messages",), "batch_too_large", message)]
    return []


# --- merging and reporting --------------------------------------------------------------

_KNOWN_TYPES = frozenset(typing.get_args(core_schema.ErrorType))


def merge(
    title: str, exc: ValidationError | None, extra: Iterable[InitErrorDetails], order: Sequence[str]
) -> ValidationError:
    """One ValidationError with ``exc``'s errors and ``extra``, sorted by field order."""
    errors: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False) if exc is not None else ():
        rebuilt = problem(error["loc"], error["type"], error["msg"], error["input"])
        if error["type"] in _KNOWN_TYPES:  # keep pydantic's own type and context
            known = InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"])
            if "ctx" in error:
                known["ctx"] = error["ctx"]
            with contextlib.suppress(KeyError, TypeError, ValueError):
                ValidationError.from_exception_data(title, [known])
                rebuilt = known
        errors.append(rebuilt)
    errors.extend(extra)

    def position(error: InitErrorDetails) -> int:
        head = error["loc"][0] if error["loc"] else ""
        return order.index(head) if head in order else len(order)

    return ValidationError.from_exception_data(title, sorted(errors, key=position))
