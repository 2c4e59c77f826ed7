"""API keys: every ``/v1/*`` call needs ``Authorization: Bearer KEY`` for one of the server's keys (401
otherwise), compared in constant time; the key is never logged. ``/health`` and ``/metrics`` stay open, as in
vLLM and TGI, so load balancers and Prometheus need no secret."""

from __future__ import annotations

import hmac
import json

PROTECTED_PREFIX = "/v1/"


class ApiKeyAuth:
    """ASGI middleware checking the bearer token of every request under ``/v1/`` against ``keys``."""

    def __init__(self, app, keys: list[str]):
        self.app = app
        self.keys = [k.encode() for k in keys]

    def allowed(self, scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        found = False
        for key in self.keys:  # every key compared, in constant time: no early exit tells which one was close
            found |= hmac.compare_digest(token.strip(), key)
        return found

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith(PROTECTED_PREFIX) or self.allowed(scope):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": {"message": "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                     "type": "authentication_error", "param": None, "code": 401}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
