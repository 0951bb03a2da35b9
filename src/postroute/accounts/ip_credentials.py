"""IP credentials: networks whose clients may submit over SMTP without AUTH (and, on the
STARTTLS listener, without TLS) on behalf of one account, as Postfix's ``mynetworks``.

A network belongs to one account: the same or an overlapping network of another
account is a conflict, so a client address always maps to at most one account.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.accounts import repository as repo
from postroute.kit import ids
from postroute.kit.clock import Clock
from postroute.models import IpCredential

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_DESCRIPTION = 500


def parse_network(cidr: str) -> Network:
    """``10.0.0.0/24``, ``2001:db8::/32`` or a single address (``/32`` or ``/128``)."""
    text = cidr.strip()
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _invalid(f"{cidr!r} is not an IP address or network (CIDR)") from None
        raise _invalid(f"{cidr!r} has host bits set; did you mean {loose}?") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # clients are matched by their IPv4 address
            raise _invalid(f"give IPv4-mapped networks as IPv4 ({mapped}/...), not {network}")
    return network


def client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address; IPv4-mapped IPv6 (``::ffff:10.0.0.1``) as IPv4."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def add(
    session: AsyncSession, account_id: str, cidr: str, description: str, clock: Clock
) -> IpCredential:
    network = parse_network(cidr)
    description = description.strip()
    if len(description) > MAX_DESCRIPTION or any(c in description for c in "\r\n\x00"):
        raise _invalid(f"one line of at most {MAX_DESCRIPTION} characters", "description")
    await repo.lock_ip_credentials(session)
    for existing in await repo.list_ip_credentials(session, None):
        other = parse_network(existing.cidr)
        if other == network:
            raise errors.Conflict(f"an IP credential for {network} already exists")
        same_version = other.version == network.version
        if same_version and other.overlaps(network) and existing.account_id != account_id:
            raise errors.Conflict(f"{network} overlaps a network of another account")
    credential = IpCredential(
        id=ids.new_id(ids.IP_CREDENTIAL),
        account_id=account_id,
        cidr=str(network),
        description=description,
        created_at=clock.now(),
    )
    session.add(credential)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent add of the same network won
        raise errors.Conflict(f"an IP credential for {network} already exists") from None
    return credential


async def list_for(session: AsyncSession, account_id: str) -> Sequence[IpCredential]:
    return await repo.list_ip_credentials(session, account_id)


async def get(session: AsyncSession, account_id: str, credential_id: str) -> IpCredential:
    credential = await repo.get_ip_credential(session, account_id, credential_id)
    if credential is None:
        raise errors.NotFound(f"no IP credential {credential_id!r}")
    return credential


async def remove(session: AsyncSession, account_id: str, credential_id: str) -> None:
    await session.delete(await get(session, account_id, credential_id))
    await session.flush()


async def account_for_ip(session: AsyncSession, ip: str) -> str | None:
    """The account whose network contains ``ip`` (the most specific one), or None."""
    address = client_address(ip)
    if address is None:
        return None
    best: tuple[int, str] | None = None
    for credential in await repo.list_ip_credentials(session, None):
        network = ipaddress.ip_network(credential.cidr)
        if address.version != network.version or address not in network:
            continue
        if best is None or network.prefixlen > best[0]:
            best = (network.prefixlen, credential.account_id)
    return best[1] if best else None


def _invalid(message: str, field: str = "cidr") -> errors.ValidationFailed:
    return errors.ValidationFailed(message, details=[{"field": field, "message": message}])
