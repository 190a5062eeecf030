"""HTTP hardening applied to every response: security headers, the Host check, Secure cookies on https.

One pure ASGI middleware (no BaseHTTPMiddleware: SSE streams pass through untouched):
- Content-Security-Policy without inline script (the pages' scripts are files under /static; their
  data travels in `<script type="application/json">` blocks, which are not run), frame-ancestors 'none'
  and X-Frame-Options DENY (no page of another site may frame the steering forms), nosniff, and a
  same-origin Referrer-Policy. The API browser at /docs is Swagger UI from npm, served like the pages'
  scripts (server/routes/assets.py), under the same policy.
- The Host header must name this server (DNS rebinding: a page on evil.example resolving to 127.0.0.1
  would otherwise reach dev mode): localhost, 127.0.0.1, ::1, the bind address when it is not a
  wildcard, and STEERBOARD_ALLOWED_HOSTS ("*" accepts any). Others get 400.
- Every Set-Cookie of an https request (scope scheme, which ProxyHeadersMiddleware sets from
  X-Forwarded-Proto only for STEERBOARD_FORWARDED_ALLOW_IPS) is marked Secure.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    # htmx and Plotly.js add <style> elements of their own; styles cannot run code.
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
_COMMON: list[tuple[bytes, bytes]] = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


def allowed_hosts(bind_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The Host names answered: localhost names, the bind address unless it is a wildcard, and `extra`."""
    names = {*LOCAL_HOSTS, *(h.strip().lower().strip("[]") for h in extra if h.strip())}
    if bind_host.strip().lower() not in _WILDCARD_BINDS:
        names.add(bind_host.strip().lower().strip("[]"))
    return frozenset(names)


def host_name(header: str) -> str:
    """The name of a Host header, without port or IPv6 brackets, lower case ('' when malformed)."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.any_host = "*" in hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        csp = CSP
        secure = scope.get("scheme") in ("https", "wss")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = [
                    (k, _secure_cookie(v) if secure and k.lower() == b"set-cookie" else v)
                    for k, v in message.get("headers", [])
                ]
                present = {k.lower() for k, _ in raw}
                raw += [(k, v) for k, v in [(b"content-security-policy", csp.encode()), *_COMMON] if k not in present]
                if secure and b"strict-transport-security" not in present:
                    raw.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": raw}
            await send(message)

        if not self.any_host and host not in self.hosts:
            if scope["type"] != "http":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = (
                f"Invalid Host header {host!r}: this server answers {', '.join(sorted(self.hosts))} "
                "(STEERBOARD_ALLOWED_HOSTS adds names)\n"
            ).encode()
            await send_with_headers({
                "type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())],
            })
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)


def _secure_cookie(value: bytes) -> bytes:
    attrs = {a.strip().lower() for a in value.split(b";")[1:]}
    return value if b"secure" in attrs else value + b"; Secure"
