"""The value checks behind the send schemas, which SMTP submission (``messages.ingest``)
also applies to Subject and the ``X-Postroute-*`` headers: no control character but tab
in anything that ends up in a header, since the email package (and mail readers) take
VT, FF and FS..RS for line breaks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic_core import PydanticCustomError

from postroute.messages import validation as v

CONTROLS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)]
HEADER_CHECKS: dict[str, Callable[[str], object]] = {
    "single_line": v.single_line,
    "subject": v.subject,
    "tag": v.tag,
    "pool_ref": v.pool_ref,
    "metadata_key": v.metadata_key,
    "metadata_value": v.metadata_value,
    "filename": v.filename,
    "display_name": v.display_name,
}


@pytest.mark.parametrize("check", HEADER_CHECKS)
def test_every_control_character_but_tab_is_refused(check: str) -> None:
    for char in CONTROLS:
        with pytest.raises(PydanticCustomError) as refused:
            HEADER_CHECKS[check](f"a{char}b")
        if char in "\r\n\x00":
            expected = "must not contain line breaks (CR, LF) or NUL characters"
        else:
            expected = f"must not contain control characters (U+{ord(char):04X}); tab is allowed"
        assert refused.value.message() == expected
    assert HEADER_CHECKS[check]("a\tb é \u2028 ✓") is not None
