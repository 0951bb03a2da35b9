"""API shapes of sending domains."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from postroute.domains.names import unicode_name
from postroute.domains.records import txt_strings
from postroute.domains.service import DomainView
from postroute.kit import text as t

Algorithm = Literal["rsa", "ed25519"]


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        min_length=1,
        max_length=253,
        json_schema_extra={"pattern": t.NO_CONTROL_PATTERN},
        description="The domain of your From addresses; Unicode names are stored in their "
        "ASCII (punycode) form.",
        examples=["example.com"],
    )
    dkim_algorithms: list[Algorithm] = Field(
        default=["rsa"],
        min_length=1,
        max_length=2,
        description="`rsa` (RSA-2048, required), and `ed25519` for a second signature.",
        examples=[["rsa", "ed25519"]],
    )


class RecordOut(BaseModel):
    type: str = Field(description="`TXT`, `MX` or `CNAME`.", examples=["TXT"])
    name: str = Field(
        description="The full name to publish.", examples=["pr20261204a._domainkey.example.com"]
    )
    value: str = Field(
        description="The value, as one string.", examples=["v=DKIM1; k=rsa; p=MIIB..."]
    )
    zone_value: str = Field(
        description="The value as a zone file or DNS console takes it: TXT values as quoted "
        "strings of at most 255 bytes.",
        examples=['"v=DKIM1; k=rsa; p=MIIB..." "...AQAB"'],
    )
    purpose: str = Field(
        description="`dkim`, `return_path_mx`, `return_path_spf`, `tracking` (optional), "
        "`spf` and `dmarc` (advice).",
        examples=["dkim"],
    )
    required: bool = Field(description="Needed for the domain (or its return path) to be verified.")
    status: str = Field(
        description="`unchecked`, `verified`, `missing`, `mismatch` (another value found), "
        "or `could_not_check` (the DNS did not answer: try again).",
        examples=["verified"],
    )
    found: str | None = Field(description="What the DNS had at the last check.")
    checked_at: datetime | None = Field(description="The last check (ISO 8601, UTC).")


class DkimKeyOut(BaseModel):
    selector: str = Field(examples=["pr20261204a"])
    algorithm: str = Field(examples=["rsa"])
    state: str = Field(
        description="`pending` (publish it; it signs once verified), `active` (signs), "
        "`retired` (still published until `retire_at`)."
    )
    retire_at: datetime | None = Field(description="When a retired key may be unpublished.")


class ReturnPathOut(BaseModel):
    domain: str = Field(description="The domain of bounce addresses (`bounces+<message id>@...`).")
    verified: bool = Field(description="Its MX and SPF records are verified.")


class DomainOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str = Field(examples=["dom_0123456789ABCDEFGHIJKLMNOP"])
    name: str = Field(description="ASCII (punycode) form.", examples=["example.com"])
    unicode_name: str = Field(description="As people read it.", examples=["example.com"])
    status: str = Field(
        description="`pending` (not verified yet), `verified` (its DKIM record is: mail from it "
        "is signed), `failing` (verified once; a required record is gone).",
        examples=["verified"],
    )
    return_path: ReturnPathOut
    tracking_host: str | None = Field(description="The optional tracking CNAME's name.")
    tracking_verified: bool
    dkim: list[DkimKeyOut]
    records: list[RecordOut] = Field(description="Every record to publish, with its status.")
    created_at: datetime
    verified_at: datetime | None
    last_checked_at: datetime | None


class DomainList(BaseModel):
    data: list[DomainOut]


def domain_out(shown: DomainView) -> DomainOut:
    d = shown.domain
    return DomainOut(
        id=d.id,
        name=d.name,
        unicode_name=unicode_name(d.name),
        status=d.status,
        return_path=ReturnPathOut(
            domain=f"{d.return_path_sub}.{d.name}", verified=d.return_path_verified
        ),
        tracking_host=f"{d.tracking_sub}.{d.name}" if d.tracking_sub else None,
        tracking_verified=d.tracking_verified,
        dkim=[
            DkimKeyOut(
                selector=k.selector, algorithm=k.algorithm, state=k.state, retire_at=k.retire_at
            )
            for k in shown.keys
        ],
        records=[
            RecordOut(
                type=r.type,
                name=r.name,
                value=r.value,
                zone_value=txt_strings(r.value) if r.type == "TXT" else r.value,
                purpose=r.purpose,
                required=r.required,
                status=r.status,
                found=r.found,
                checked_at=r.checked_at,
            )
            for r in shown.records
        ],
        created_at=d.created_at,
        verified_at=d.verified_at,
        last_checked_at=d.last_checked_at,
    )
