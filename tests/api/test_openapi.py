"""/openapi.json is a valid OpenAPI 3.1 document that tells the truth: the error envelope
for every error status a route can answer, descriptions and examples, addresses as
strings or objects; and /docs works without internet access."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis

from postroute.kit.guard import TooManyAttempts
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool

Document = dict[str, Any]
ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


@pytest.fixture
async def document(client: httpx.AsyncClient) -> Document:
    reply = await client.get("/openapi.json")
    assert reply.status_code == 200
    return dict(reply.json())


def operations(document: Document) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_errors_are_the_envelope_everywhere(document: Document) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                content = response["content"]["application/json"]
                assert content["schema"] == ENVELOPE, (method, path, status)
                assert content["example"]["error"]["code"], (method, path, status)


def test_error_statuses_are_documented_where_they_happen(document: Document) -> None:
    for path, method, operation in operations(document):
        documented = set(operation["responses"])
        if path.startswith("/v1/"):
            assert {"401", "429"} <= documented, (method, path)
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
        if "{" in path:
            assert {"404", "422"} <= documented, (method, path)
        if "requestBody" in operation:
            assert {"413", "422"} <= documented, (method, path)
    assert {"409"} <= set(document["paths"]["/v1/send"]["post"]["responses"])
    assert {"409"} <= set(document["paths"]["/v1/smtp-pools"]["post"]["responses"])
    assert {"409"} <= set(document["paths"]["/v1/ip-credentials"]["post"]["responses"])
    assert set(document["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
    revoke = document["paths"]["/v1/api-keys/{key_id}"]["delete"]["responses"]
    assert "204" in revoke and "content" not in revoke["204"]


@pytest.mark.parametrize(
    "name",
    [
        "SendRequest", "Attachment", "Address", "SendResponse", "SentMessage",
        "SendBatchRequest", "SendBatchResponse", "MessageOut", "MessageDetail", "MessageList",
        "EventOut", "AttemptOut", "PoolCreate", "PoolUpdate", "PoolOut", "PoolUsage",
        "PoolHealth", "RateLimit", "KeyCreate", "KeyOut", "KeyCreated", "IpCredentialCreate",
        "IpCredentialOut", "ErrorEnvelope", "ErrorBody", "ErrorDetail",
    ],
)  # fmt: skip
def test_fields_are_described(document: Document, name: str) -> None:
    schemas = document["components"]["schemas"]
    schema = schemas.get(name) or schemas.get(f"{name}-Input") or schemas[f"{name}-Output"]
    for field, spec in schema.get("properties", {}).items():
        assert "description" in spec or "examples" in spec or "$ref" in spec, (name, field)
    assert "``" not in str(schema)  # reST literals are Markdown by now


def test_addresses_are_strings_or_objects(document: Document) -> None:
    schema = document["components"]["schemas"]["SendRequest"]["properties"]
    for field in ("from", "to", "cc", "bcc", "reply_to"):
        kinds = [branch.get("type", branch.get("$ref")) for branch in schema[field]["anyOf"]]
        assert "string" in kinds, field
        assert "#/components/schemas/Address" in kinds, field


def assert_valid_openapi_3_1(document: Document) -> None:
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name  # JSON Schema 2020-12
    text = str(document)
    for ref in set(re.findall(r"#/components/schemas/([\w-]+)", text)):
        assert ref in document["components"]["schemas"], ref


def _validator(document: Document, schema: dict[str, Any]) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


def check(document: Document, path: str, method: str, reply: httpx.Response) -> None:
    """``reply`` has a status the document lists for the operation, and its body fits."""
    responses = document["paths"][path][method]["responses"]
    status = str(reply.status_code)
    assert status in responses, (method, path, status, reply.text)
    content = responses[status].get("content", {}).get("application/json")
    if content is None:
        return
    _validator(document, content["schema"]).validate(reply.json())


async def test_a_valid_document_whose_statuses_are_what_the_routes_answer(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, document: Document
) -> None:
    assert_valid_openapi_3_1(document)
    auth, bad_auth = tenant.headers, {"Authorization": "Bearer pr_live_wrong"}
    mail = {"from": "a@example.com", "to": "b@example.org", "subject": "s", "text": "t"}
    once = {**auth, "Idempotency-Key": "k"}
    pool = await add_pool(client, tenant, 2525)
    sent = {
        "202": await client.post("/v1/send", json=mail, headers=once),
        "401": await client.post("/v1/send", json=mail, headers=bad_auth),
        "409": await client.post("/v1/send", json={**mail, "text": "u"}, headers=once),
        "422": await client.post("/v1/send", json={**mail, "to": "nope"}, headers=auth),
    }
    for status, reply in sent.items():
        assert str(reply.status_code) == status, reply.text
        check(document, "/v1/send", "post", reply)
    message_id = sent["202"].json()["messages"][0]["id"]
    for status, reply in {
        "200": await client.get(f"/v1/messages/{message_id}", headers=auth),
        "404": await client.get("/v1/messages/msg_0123456789ABCDEFGHIJKLMNOP", headers=auth),
        "422": await client.get("/v1/messages/msg%00", headers=auth),
    }.items():
        assert str(reply.status_code) == status, reply.text
        check(document, "/v1/messages/{message_id}", "get", reply)
    body = {"name": pool["name"], "host": "127.0.0.1", "port": 25}
    for status, reply in {
        "201": await client.post("/v1/smtp-pools", json={**body, "name": "b"}, headers=auth),
        "409": await client.post("/v1/smtp-pools", json=body, headers=auth),
        "422": await client.post("/v1/smtp-pools", json={**body, "port": 0}, headers=auth),
    }.items():
        assert str(reply.status_code) == status, reply.text
        check(document, "/v1/smtp-pools", "post", reply)
    key = (await client.post("/v1/api-keys", json={"name": "ci"}, headers=auth)).json()["id"]
    revoked = await client.delete(f"/v1/api-keys/{key}", headers=auth)
    assert revoked.status_code == 204 and revoked.content == b""
    check(document, "/v1/api-keys/{key_id}", "delete", revoked)
    check(document, "/readyz", "get", await client.get("/readyz"))
    runtime.stopping = True
    check(document, "/readyz", "get", await client.get("/readyz"))

    class Refusing:  # the guard once it has too many checks waiting for this address
        async def check(self, *_: Any) -> None:
            raise TooManyAttempts

    runtime.guard = Refusing()  # type: ignore[assignment]
    limited = await client.get("/v1/smtp-pools", headers=auth)
    assert limited.status_code == 429
    check(document, "/v1/smtp-pools", "get", limited)


async def test_docs_are_served_without_internet(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(url.startswith("/") for url in urls), urls
    assert "cdn" not in page.text and "https://" not in page.text
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    assert "/openapi.json" in page.text
    assert (await client.get("/redoc")).status_code == 404  # it would need a CDN
