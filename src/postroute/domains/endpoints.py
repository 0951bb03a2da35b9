"""HTTP routes for ``/v1/domains``: add a domain, see the records to publish, verify."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Response, status

from postroute.api.deps import AccountDep, RuntimeDep, SessionDep
from postroute.api.errors import responses
from postroute.api.params import object_id
from postroute.api.routing import JsonRoute
from postroute.db import begin_read
from postroute.domains import service, verification
from postroute.domains.dns import Checker
from postroute.domains.schemas import DomainCreate, DomainList, DomainOut, domain_out
from postroute.runtime import Runtime

router = APIRouter(prefix="/v1/domains", tags=["domains"], route_class=JsonRoute)
DomainId = Annotated[str, object_id("domain", "dom_0123456789ABCDEFGHIJKLMNOP")]


def hosts(rt: Runtime) -> service.Hosts:
    return service.Hosts.of(rt.settings.bounce_host, rt.settings.public_url)


@router.get(
    "", response_model=DomainList, summary="List sending domains", responses=responses(401, 429)
)
async def list_domains(account: AccountDep, session: SessionDep) -> DomainList:
    return DomainList(
        data=[domain_out(v) for v in await service.views(session, account.account_id)]
    )


@router.post(
    "",
    response_model=DomainOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a sending domain",
    responses=responses(
        401, (409, "The domain is already added, or verified by another account."), 413, 422, 429
    ),
)
async def add_domain(
    data: DomainCreate, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> DomainOut:
    """Makes its DKIM key(s) and answers the DNS records to publish; then verify."""
    shown = await service.add(
        session, account.account_id, data.name, data.dkim_algorithms, rt.box, hosts(rt), rt.clock
    )
    await session.commit()
    return domain_out(shown)


@router.get(
    "/{domain_id}",
    response_model=DomainOut,
    summary="Get a domain",
    responses=responses(401, 404, 422, 429),
)
async def get_domain(domain_id: DomainId, account: AccountDep, session: SessionDep) -> DomainOut:
    domain = await service.require(session, account.account_id, domain_id)
    return domain_out(await service.view(session, domain))


@router.delete(
    "/{domain_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a domain",
    responses=responses(401, 404, 422, 429),
)
async def delete_domain(domain_id: DomainId, account: AccountDep, session: SessionDep) -> Response:
    await service.delete(session, account.account_id, domain_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{domain_id}/verify",
    response_model=DomainOut,
    summary="Check the domain's DNS records now",
    responses=responses(401, 404, 422, 429),
)
async def verify_domain(
    domain_id: DomainId, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> DomainOut:
    """Each record: `verified`, `missing`, `mismatch` (with the value found) or
    `could_not_check`. The lookups hold no transaction."""
    await begin_read(session)
    domain = await service.require(session, account.account_id, domain_id)
    before = await service.view(session, domain)
    await session.commit()
    s = rt.settings
    found = await verification.check(
        Checker(s.resolver_list, s.dns_timeout_seconds), before.records
    )
    domain = await service.require(session, account.account_id, domain_id)
    shown = await verification.apply_results(
        session,
        await service.view(session, domain),
        found,
        hosts(rt),
        rt.clock.now(),
        timedelta(hours=s.domain_recheck_hours),
    )
    await session.commit()
    return domain_out(shown)


@router.post(
    "/{domain_id}/dkim/rotate",
    response_model=DomainOut,
    summary="Start a DKIM key rotation",
    responses=responses(401, 404, (409, "A new key already waits for its record."), 422, 429),
)
async def rotate_key(
    domain_id: DomainId, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> DomainOut:
    """Adds a pending key (a new selector) to publish; once verified it signs, and the old
    key stays published for 7 days."""
    shown = await service.rotate(
        session, account.account_id, domain_id, rt.box, hosts(rt), rt.clock
    )
    await session.commit()
    return domain_out(shown)
