"""The OpenAPI document (``/openapi.json``) and Swagger UI (``/docs``), served offline.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package and are served by the
application itself under ``/docs/assets``: the page works without internet access.
The document is FastAPI's, with every error answer described by our envelope (routes
declare theirs with :func:`postroute.api.errors.responses`) and docstrings' reST
literals turned into Markdown, which Swagger UI renders.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

DOCS = "/docs"
ASSETS = "/docs/assets"
DESCRIPTION = """\
Self-hosted transactional email: send API, SMTP pools, message history.

Every `/v1` request authenticates with `Authorization: Bearer pr_live_...`. Every error
answers `{"error": {"code", "message", "details": [{"field", "message"}]}}`; objects of
another account answer 404. Bodies are JSON (UTF-8), at most `POSTROUTE_MAX_REQUEST_BYTES`.
"""
TAGS = [
    {"name": "messages", "description": "Send, and read back what was sent."},
    {"name": "smtp-pools", "description": "Upstream relays that mail goes out through."},
    {"name": "api-keys", "description": "Keys of this account (shown once, revocable)."},
    {"name": "ip-credentials", "description": "Networks that may submit SMTP without AUTH."},
    {"name": "health", "description": "Liveness and readiness, without authentication."},
]
_REST_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_REST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def install(app: FastAPI) -> None:
    """``/docs`` and ``/openapi.json`` on ``app`` (created with ``docs_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": False},
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=DESCRIPTION,
                routes=app.routes,
                tags=TAGS,
            )
            app.openapi_schema = _markdown(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _markdown(node: Any) -> Any:
    """Every ``description`` with reST literals (````x````) and roles as Markdown."""
    if isinstance(node, dict):
        out = {key: _markdown(value) for key, value in node.items()}
        if isinstance(out.get("description"), str):
            text = _REST_ROLE.sub(r"`\1`", out["description"])
            out["description"] = _REST_LITERAL.sub(r"`\1`", text)
        return out
    if isinstance(node, list):
        return [_markdown(item) for item in node]
    return node
