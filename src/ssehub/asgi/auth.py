"""The HTTP side of access control: credentials from requests, and the checks made before any routing.

    access = Access(Policy(keys={"deploy": "..."}), cors_origins=["https://app.example.com"])
    app = create_app(hub, access=access)

**The one call.** Every endpoint that needs a right makes one call before it does anything:

    principal = access.require(request, SUBSCRIBE, topic)      # 401, 403, or who is asking
    principal = access.require(request, CANCEL, "runs/abc", owner=info.meta.get("started_by"))

`require` reads the credential once per request (kept in the scope), verifies it with the policy
(`ssehub.access.Policy`), and raises `Unauthorized` (401) or `Forbidden` (403), which every
endpoint already answers as JSON. A surface added later (the Durable Streams paths, a useChat
route of an agent) calls the same thing with the same rights on its own names: `SUBSCRIBE`
to read a stream, `PUBLISH` to append to, close or delete it, `AGENTS` to start an agent.
`principal.expires` is when a stream it opens must end (see `Subscription.chunks(until=...)`).

The credential is read from, in this order: `Authorization: Bearer <credential>` (the scheme
in any case), the query parameter `?token=` (EventSource cannot set headers), the cookie named
`cookie_name`. A credential that is present and wrong is refused; the next source is not tried.

**Before routing** (`screen`, run by the app on every HTTP request, credentials or not):

- `Host` must be one of `allowed_hosts` (when given): else 421. This stops DNS rebinding, a
  web page whose own name resolves to the loopback address of a hub on the visitor's machine.
- A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) from one of `cors_origins`
  gets 204 with the methods and headers the hub takes; from any other origin, 403.
- A state-changing request (`POST`, `PUT`, `PATCH`, `DELETE`) whose `Origin` is present and is
  neither the hub's own nor one of `cors_origins` gets 403, whatever its content type: a web
  page can send a "simple" `text/plain` POST anywhere without a preflight, cookies included.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import Request, cookie_parser
from starlette.responses import Response
from starlette.types import Message, Scope, Send

from ..access import OPEN, Policy, Principal, forbidden
from ..durable.headers import REQUEST_HEADERS, RESPONSE_HEADERS
from ..exceptions import InvalidInput, Unauthorized
from .access import SUBJECT_KEY
from .responses import error_response

__all__ = ["LOOPBACK_HOSTS", "PRINCIPAL_KEY", "Access", "scoped_key"]

log = logging.getLogger("ssehub.auth")

#: Where the principal of a request is kept in its ASGI scope; its `name` goes to the access log's `subject`.
PRINCIPAL_KEY = "ssehub.principal"
#: The names a hub bound to loopback answers to by default.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_ALLOW_METHODS = "GET, HEAD, PUT, POST, DELETE"
# ssehub's own headers, and those of the Durable Streams surface (`ssehub.asgi.durable`).
_ALLOW_HEADERS = ", ".join(
    ("Authorization", "Content-Type", "Accept", "Last-Event-ID", "Idempotency-Key", "Prefer", *REQUEST_HEADERS)
)
_EXPOSE_HEADERS = ", ".join(
    ("Location", "X-Run-Id", "X-Run-Token", "Preference-Applied", "Retry-After", "WWW-Authenticate", *RESPONSE_HEADERS)
)


def _origin(value: str) -> str:
    """`scheme://host[:port]`, lower case, default port dropped; ValueError for anything else."""
    parts = urlsplit(value.strip().lower())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"an origin is scheme://host[:port], got {value[:80]!r}")
    if parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"an origin is scheme://host[:port], got {value[:80]!r}")
    netloc = parts.netloc
    if netloc.endswith(":" + _DEFAULT_PORTS[parts.scheme]):
        netloc = netloc.rsplit(":", 1)[0]
    return f"{parts.scheme}://{netloc}"


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Access:
    """Access control of one app: its `Policy`, its CORS origins, its Host allow-list, its cookie name."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        cors_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] | None = None,
        cookie_name: str = "ssehub_token",
    ) -> None:
        self.policy = policy or Policy()
        try:
            origins = [o.strip() for o in cors_origins]
            self.any_origin = "*" in origins
            self.cors_origins = frozenset(_origin(o) for o in origins if o != "*")
        except ValueError as exc:
            raise InvalidInput(f"CORS origin: {exc}") from None
        self.allowed_hosts: frozenset[str] | None = None
        if allowed_hosts is not None:
            hosts = [h.strip().lower() for h in allowed_hosts]
            self.allowed_hosts = None if "*" in hosts else frozenset(_host_name(h) for h in hosts if h)
        if not cookie_name or not cookie_name.isascii() or not all(c.isalnum() or c in "_-." for c in cookie_name):
            raise InvalidInput(f"invalid cookie name {cookie_name[:40]!r}")
        self.cookie_name = cookie_name
        self._cors = self.any_origin or bool(self.cors_origins)
        self._good_hosts: set[bytes] = set()  # Host headers found allowed

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    # -- before routing ------------------------------------------------------------------------------------

    def screen(self, scope: Scope) -> Response | None:
        """The refusal of a request that must not reach any endpoint (or a preflight's answer); None: go on."""
        host = origin = preflight = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight = value
        if self.allowed_hosts is not None and (host is None or host not in self._good_hosts):
            name = _host_name(host.decode("latin-1")) if host else ""
            if name in self.allowed_hosts and host is not None and len(self._good_hosts) < 256:
                self._good_hosts.add(host)  # every request of a client sends the same Host: check it once
            if name not in self.allowed_hosts:
                return error_response(
                    421,
                    "host_not_allowed",
                    f"this hub does not answer to the host {name[:100]!r} (see --allowed-hosts)",
                )
        method = scope["method"]
        if origin is None:
            return None
        text = origin.decode("latin-1")
        if method == "OPTIONS" and preflight is not None:
            if self._cross_origin_allowed(text):
                return Response(status_code=204, headers=self._preflight_headers(text))
            return error_response(403, "origin_not_allowed", f"origin {text[:100]!r} may not call this hub")
        if method in _UNSAFE and not (self._cross_origin_allowed(text) or _same_origin(text, host)):
            return error_response(403, "origin_not_allowed", f"origin {text[:100]!r} may not change anything here")
        return None

    def cors(self, scope: Scope, send: Send) -> Send:
        """`send`, adding the CORS headers to the answer when the request comes from an allowed origin."""
        extra = self.cors_headers(scope)
        if not extra:
            return send

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return send_with_cors

    def cors_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The CORS headers of the answer to a request from an allowed origin; none for any other."""
        if not self._cors:
            return []
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        if origin is None or not self._cross_origin_allowed(origin.decode("latin-1")):
            return []
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self._cors_headers(origin.decode()).items()]

    def _cross_origin_allowed(self, origin: str) -> bool:
        if self.any_origin:
            return True
        try:
            return _origin(origin) in self.cors_origins
        except ValueError:
            return False  # `null` (a sandboxed frame, a file:// page) and anything malformed

    def _cors_headers(self, origin: str) -> dict[str, str]:
        if self.any_origin and _safe_origin(origin) not in self.cors_origins:
            # Any origin, so never with credentials: a cookie must not ride along to a page we do not know.
            return {"access-control-allow-origin": "*", "access-control-expose-headers": _EXPOSE_HEADERS}
        return {
            "access-control-allow-origin": origin,
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": _EXPOSE_HEADERS,
            "vary": "Origin",
        }

    def _preflight_headers(self, origin: str) -> dict[str, str]:
        headers = self._cors_headers(origin)
        del headers["access-control-expose-headers"]
        return {
            **headers,
            "access-control-allow-methods": _ALLOW_METHODS,
            "access-control-allow-headers": _ALLOW_HEADERS,
            "access-control-max-age": "600",
        }

    # -- credentials -----------------------------------------------------------------------------------------

    def credential(self, request: Request) -> str | None:
        """The credential the request carries, from the header, the query or the cookie; None: none."""
        authorization = request.headers.get("authorization")
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
            raise Unauthorized("the Authorization header must be Bearer <key or token>")
        if b"token=" in request.scope.get("query_string", b""):
            token = request.query_params.get("token")
            if token:
                return token
        cookie = request.headers.get("cookie")
        if cookie and self.cookie_name in cookie:
            return cookie_parser(cookie).get(self.cookie_name) or None
        return None

    def principal(self, request: Request) -> Principal:
        """Who is asking: authenticated once per request. Unauthorized (401) without valid credentials."""
        found: Principal | None = request.scope.get(PRINCIPAL_KEY)
        if found is not None:
            return found
        if not self.policy.enabled:
            principal = OPEN
        else:
            try:
                principal = self.policy.authenticate(self.credential(request))
            except Unauthorized as exc:
                log.debug("%s %s: refused: %s", request.method, request.url.path, exc.message)
                raise
        request.scope[PRINCIPAL_KEY] = principal
        if principal is not OPEN:
            request.scope[SUBJECT_KEY] = principal.name
        return principal

    def require_scope(self, scope: Scope, right: str, resource: str) -> Principal:
        """`require` for a plain ASGI endpoint: a Request is made only when there are credentials to read."""
        if not self.policy.enabled and scope.get(PRINCIPAL_KEY) is None:
            scope[PRINCIPAL_KEY] = OPEN  # as `principal` records it; OPEN may do everything
            return OPEN
        return self.require(Request(scope), right, resource)

    def require(self, request: Request, right: str, resource: str, *, owner: str | None = None) -> Principal:
        """The principal, if it has `right` on `resource` (or is the `owner` recorded on it); else 401 / 403."""
        principal = self.principal(request)
        if principal.may(right, resource) or (owner is not None and principal.subject == owner):
            return principal
        log.debug("%s %s: %s may not %s %r", request.method, request.url.path, principal.name, right, resource)
        raise forbidden(principal, right, resource)


def scoped_key(key: str | None, principal: Principal) -> str | None:
    """An Idempotency-Key of an agent call as the store keeps it: one principal's, apart from every other's,
    so that guessing another's key cannot find (and get a token for) another's run."""
    if key is None:
        return None
    return hashlib.sha256(principal.scope.encode()).hexdigest()[:16] + ":" + key


def _safe_origin(origin: str) -> str:
    try:
        return _origin(origin)
    except ValueError:
        return ""


def _same_origin(origin: str, host: bytes | None) -> bool:
    """Whether `Origin` names this very hub (by its Host header; the scheme may be a TLS proxy's)."""
    if host is None:
        return False
    try:
        ours = _origin(origin)
    except ValueError:
        return False
    netloc = ours.split("://", 1)[1]
    given = host.decode("latin-1").strip().lower()
    scheme = ours.split("://", 1)[0]
    if given.endswith(":" + _DEFAULT_PORTS[scheme]):
        given = given.rsplit(":", 1)[0]
    return netloc == given
