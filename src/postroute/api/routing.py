"""The route class of every JSON endpoint: request bodies parsed strictly.

Python's ``json`` module accepts what JSON does not: lone surrogates (``"\\ud800"``, or
their UTF-8 form), which no database and no mail header can hold, and ``NaN`` or
``Infinity``. pydantic-core's parser refuses them (and is about four times faster on a
large batch), so such a body is a 422 like any other malformed JSON, never a 500 later.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body, allow_inf_nan=False)
            except ValueError as exc:  # FastAPI answers this one with its json_invalid 422
                raise json.JSONDecodeError(str(exc), "", 0) from None
        return self._json


class JsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
