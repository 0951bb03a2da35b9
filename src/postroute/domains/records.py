"""The DNS records a sending domain needs, as the API shows them: copy-paste ready (a
long TXT value split into strings of at most 255 bytes), each with its purpose."""

from __future__ import annotations

from dataclasses import dataclass

from postroute.domains import keys

DKIM = "dkim"
RETURN_PATH_MX = "return_path_mx"
RETURN_PATH_SPF = "return_path_spf"
TRACKING = "tracking"
SPF_ADVICE = "spf"
DMARC_ADVICE = "dmarc"

# The SPF include of relays a pool may use, by host name ending (the return path's SPF
# must allow the relays that send with it as envelope sender).
RELAY_SPF = {
    ".amazonaws.com": "include:amazonses.com",
    ".mailgun.org": "include:mailgun.org",
    ".sendgrid.net": "include:sendgrid.net",
    ".postmarkapp.com": "include:spf.mtasv.net",
    ".mailjet.com": "include:spf.mailjet.com",
    ".sparkpostmail.com": "include:sparkpostmail.com",
    ".mandrillapp.com": "include:spf.mandrillapp.com",
}


@dataclass(frozen=True)
class Wanted:
    purpose: str
    type: str  # TXT | MX | CNAME
    name: str
    value: str
    required: bool


@dataclass(frozen=True)
class PublishedKey:
    selector: str
    algorithm: str
    public: str


def wanted(
    domain: str,
    dkim_keys: list[PublishedKey],
    *,
    return_path_sub: str,
    tracking_sub: str | None,
    inbound_host: str,
    public_host: str,
    relay_hosts: list[str],
) -> list[Wanted]:
    """Every record to publish for ``domain``; the advice ones are not required."""
    rp = f"{return_path_sub}.{domain}"
    spf = spf_value(relay_hosts)
    out = [
        Wanted(
            DKIM,
            "TXT",
            f"{k.selector}._domainkey.{domain}",
            keys.record_value(k.algorithm, k.public),
            True,
        )
        for k in dkim_keys
    ]
    out.append(Wanted(RETURN_PATH_MX, "MX", rp, f"10 {inbound_host}", True))
    out.append(Wanted(RETURN_PATH_SPF, "TXT", rp, spf, True))
    if tracking_sub:
        out.append(Wanted(TRACKING, "CNAME", f"{tracking_sub}.{domain}", public_host, False))
    out.append(Wanted(SPF_ADVICE, "TXT", domain, spf, False))
    out.append(
        Wanted(DMARC_ADVICE, "TXT", f"_dmarc.{domain}", "v=DMARC1; p=none; adkim=r; aspf=r", False)
    )
    return out


def spf_value(relay_hosts: list[str]) -> str:
    """``v=spf1`` with the includes of the account's known relays, then ``mx``, ``~all``."""
    includes: list[str] = []
    for host in relay_hosts:
        for ending, include in RELAY_SPF.items():
            if host.lower().endswith(ending) and include not in includes:
                includes.append(include)
    return " ".join(["v=spf1", *includes, "mx", "~all"])


def txt_strings(value: str) -> str:
    """A TXT value as a zone file or a DNS console takes it: quoted strings of at most
    255 bytes each (a DKIM key of 2048 bits is longer than one string can hold)."""
    raw = value.encode("ascii")
    pieces = [raw[i : i + 255].decode("ascii") for i in range(0, len(raw), 255)] or [""]
    return " ".join(f'"{p}"' for p in pieces)
