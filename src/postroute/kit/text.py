"""Checks of text bound for headers or one-line fields, shared by every schema: no
control character but tab (some, as VT, FF or FS, are line breaks to the email package),
valid Unicode, not blank, bounded, and email addresses (email-validator). Each check
raises ``PydanticCustomError`` (a pydantic validator's error) with a clear message, and
has the JSON-schema keywords that tell the OpenAPI document the same rule."""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from typing import Annotated, Any, NoReturn

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema


def _memoise_domain_checks() -> None:
    """email_validator checks the domain of every address afresh (length, IDNA and UTS-46
    rules per character): more than half its cost, for the handful of domains that most
    recipients share. That check is a pure function of the domain and two flags, so its
    results are kept per domain (invalid domains raise, and are not kept). Replaced in
    the module that calls it; email_validator is pinned."""
    module = sys.modules["email_validator.validate_email"]
    check = getattr(module, "validate_email_domain_name")  # noqa: B009 - not in its stubs
    if not hasattr(check, "cache_info"):
        setattr(module, "validate_email_domain_name", lru_cache(maxsize=4096)(check))  # noqa: B010


_memoise_domain_checks()

# C0 controls but tab, and DEL: in a header the email package (and many readers) take
# some of them (VT, FF, FS, GS, RS) for line breaks, so none may reach one raw.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext: printable ASCII but ':'
# The same rule for the OpenAPI document (an ECMA 262 pattern).
NO_CONTROL_PATTERN = r"^[^\u0000-\u0008\u000a-\u001f\u007f]*$"


class JsonSchemaExtra:
    """Keywords added to a type's JSON schema (``pattern``, ``maxLength``...) where a
    validator of ours does the check, for its clearer message."""

    def __init__(self, **extra: Any) -> None:
        self.extra = extra

    def __get_pydantic_json_schema__(
        self, core: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(core), **self.extra}


NO_CONTROL = JsonSchemaExtra(pattern=NO_CONTROL_PATTERN)
# Not blank either: one character that is neither a control nor white space (what
# ``str.strip`` removes). Classes spelt out: ``\s`` and ``\w`` differ between ECMA and Python.
_C = r"\u0000-\u0008\u000a-\u001f\u007f"
_W = r" \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = f"^[^{_C}]*[^{_C}{_W}][^{_C}]*$"
TEXT = JsonSchemaExtra(pattern=TEXT_PATTERN)


# Somewhere a character that is not white space (a body that is not blank).
NOT_BLANK_PATTERN = r"[^\t\n\u000b\u000c\r\u001c-\u001f" + _W + "]"


def text(max_length: int) -> JsonSchemaExtra:
    """Schema of a short one-line text (tag, filename, pool...): not blank, ``max_length``."""
    return JsonSchemaExtra(**TEXT.extra, maxLength=max_length)


def one_line_map(keys: dict[str, Any]) -> dict[str, Any]:
    """Schema of a map of one-line strings whose keys follow ``keys``."""
    values = {"type": "string", "pattern": NO_CONTROL_PATTERN}
    return {"type": "object", "propertyNames": keys, "additionalProperties": values}


def fail(code: str, message: str) -> NoReturn:
    # No context given, so pydantic shows ``message`` verbatim (braces included).
    raise PydanticCustomError(code, message)


def body_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        fail("invalid_unicode", "contains invalid Unicode (a lone surrogate)")
    return value


def single_line(value: str) -> str:
    """No CR, LF, NUL or other control character (tab aside): nothing that ends up in a
    header may start a new one."""
    if (found := CONTROL.search(value)) is not None:
        if found[0] in "\r\n\x00":
            fail("line_break", "must not contain line breaks (CR, LF) or NUL characters")
        code = f"U+{ord(found[0]):04X}"
        fail("control_character", f"must not contain control characters ({code}); tab is allowed")
    return body_text(value)


def short(value: str, what: str, max_length: int) -> str:
    value = single_line(value).strip()
    if not value:
        fail("text_empty", f"{what} must not be empty")
    if len(value) > max_length:
        fail("text_too_long", f"{what} must be at most {max_length} characters")
    return value


@lru_cache(maxsize=4096)
def email_address(value: str) -> str:
    """A valid (possibly internationalised) address, returned normalised.

    Cached: the same sender is checked for every message of a batch, and pydantic checks
    an address again once normalised. Only valid addresses are cached (a raise is not)."""
    single_line(value)
    try:
        # test_environment only adds the reserved `.test` TLD (RFC 2606) to what is allowed:
        # handy for staging setups and test suites; such mail never leaves anyway.
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        fail("email_invalid", f"invalid email address: {exc}")
    return result.normalized


EmailText = Annotated[str, AfterValidator(email_address), JsonSchemaExtra(format="email")]
