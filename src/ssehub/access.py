"""Who may do what: principals, rights on topic patterns, API keys and signed tokens. No HTTP here.

    policy = Policy(keys={"deploy": "k3y..."}, jwt_secret="at least 32 bytes of secret .......")
    principal = policy.authenticate(credential)        # Unauthorized (401) for a missing or bad one
    policy.authorize(principal, SUBSCRIBE, "runs/abc")  # Forbidden (403) without the right

Two kinds of credential, both sent as a bearer token:

- **An API key** (`NAME=SECRET`): for back ends and operators. A key may do everything; its
  name, never its secret, is what logs show. Keys are looked up by their SHA-256 and then
  compared with `hmac.compare_digest`, so neither the lookup nor the comparison times out a
  secret byte by byte.
- **A signed token** (a JWT, verified with PyJWT): HS256/384/512 with the shared secret, or
  RS*/PS*/ES*/EdDSA with a public key (those need `cryptography`, the `crypto` extra). `exp`
  is required; `aud` and `iss` are checked when configured. The rights are in one claim, in
  the spirit of Mercure's:

      {"sub": "alice", "exp": 1767225600,
       "ssehub": {"subscribe": ["runs/abc", "chat/*"], "publish": ["chat/alice/**"],
                  "cancel": ["runs/abc"], "agents": ["chat"]}}

Rights: `subscribe` a topic (SSE, JSON pages, its info, it in a listing), `publish` to it (and
close and delete it), `cancel` the run whose topic it is (`runs/{id}`; `publish` there allows it
too), start the agents named in `agents`, and `admin` (metrics, process internals such as
host and pid), which only API keys have.

Patterns, matched against the whole topic name (or agent name): `*` matches any run of
characters other than `/` (so it stays within one segment, and may match nothing); `**`
matches any run of characters, `/` included. Everything else matches itself.

    chat/*      chat/a, chat/          not chat/a/b, not chat
    chat/**     chat/a, chat/a/b       not chat
    runs/ab*    runs/abc, runs/ab      not runs/abc/x
    **          every topic

The hub mints tokens of its own for what a browser needs (`mint`): a run's token, handed
back to whoever started the run, and the demo page's. They are HS256 with the `kid` header
`ssehub`, signed with `--jwt-secret` when there is one, else with a key derived from the API
keys (so every node and worker configured alike accepts every other's).

A principal with a `sub` owns the runs it starts (`Principal.subject`, recorded on the run):
another token for the same subject may read and cancel them too.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .exceptions import Forbidden, InvalidInput, TokenExpired, Unauthorized

__all__ = [
    "ADMIN",
    "AGENTS",
    "CANCEL",
    "OPEN",
    "PUBLISH",
    "RIGHTS",
    "SUBSCRIBE",
    "Patterns",
    "Policy",
    "Principal",
    "forbidden",
    "load_private_key",
    "mint_token",
    "parse_api_key",
    "read_keys_file",
]

SUBSCRIBE, PUBLISH, CANCEL, AGENTS, ADMIN = "subscribe", "publish", "cancel", "agents", "admin"
RIGHTS = (SUBSCRIBE, PUBLISH, CANCEL, AGENTS, ADMIN)
#: The claim of a token that holds its rights.
CLAIM = "ssehub"
#: The `kid` of the tokens the hub mints itself.
MINTED_KID = "ssehub"
MAX_PATTERNS = 1000
#: Verified tokens kept, at most.
VERIFIED_CACHE = 4096

_PATTERN = re.compile(r"[A-Za-z0-9._:/*-]{1,200}")
_KEY_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# PyJWT warns below these (RFC 7518 3.2): a secret is good for the HMACs it is long enough for.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class Patterns:
    """A set of topic patterns (see the module docstring for the rule), compiled once."""

    __slots__ = ("_exact", "_regex", "patterns")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        for pattern in self.patterns:
            if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern) or "***" in pattern:
                raise InvalidInput(f"invalid topic pattern {str(pattern)[:60]!r}")
        self._exact = frozenset(p for p in self.patterns if "*" not in p)
        wild = [_regex(p) for p in self.patterns if "*" in p]
        self._regex = re.compile("|".join(wild)) if wild else None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"Patterns({list(self.patterns)!r})"

    def matches(self, name: str) -> bool:
        if name in self._exact:
            return True
        return self._regex is not None and self._regex.fullmatch(name) is not None

    def listing_prefix(self, prefix: str) -> str | None:
        """The narrowest prefix under which every topic starting with `prefix` that matches lives; None: none can.

        A listing then scans only that part of the store: `runs/abc` asked for with no prefix scans `runs/abc`.
        """
        literals = [p.split("*", 1)[0] for p in self.patterns]
        if any(prefix.startswith(literal) for literal in literals):
            return prefix
        longer = [literal for literal in literals if literal.startswith(prefix)]
        if not longer:
            return None
        common = longer[0]
        for literal in longer[1:]:
            while not literal.startswith(common):
                common = common[:-1]
        return common


def _regex(pattern: str) -> str:
    out = []
    for part in re.split(r"(\*\*|\*)", pattern):
        out.append(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part))
    return "(?:" + "".join(out) + ")"


@functools.lru_cache(maxsize=4096)
def _patterns(patterns: tuple[str, ...]) -> Patterns:
    # Tokens for one user carry the same claims each time they are refreshed: compile them once.
    return Patterns(patterns)


_NONE = Patterns()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, and what they may do."""

    #: For logs: `key:deploy`, `token:alice` (`token` when it has no `sub`), `anonymous`.
    name: str
    #: The token's `sub`: the owner of the runs it starts.
    subject: str | None = None
    #: An API key (or no access control at all): every right.
    admin: bool = False
    subscribe: Patterns = _NONE
    publish: Patterns = _NONE
    cancel: Patterns = _NONE
    agents: Patterns = _NONE
    #: When the credential stops being valid, in seconds since the epoch; a stream ends then.
    expires: float | None = None
    #: What keeps the runs this principal starts apart from another's (their Idempotency-Keys).
    scope: str = field(default="", repr=False)

    def may(self, right: str, resource: str) -> bool:
        if self.admin:
            return True
        if right == SUBSCRIBE:
            return self.subscribe.matches(resource)
        if right == PUBLISH:
            return self.publish.matches(resource)
        if right == CANCEL:
            return self.cancel.matches(resource) or self.publish.matches(resource)
        if right == AGENTS:
            return self.agents.matches(resource)
        if right == ADMIN:
            return False
        raise ValueError(f"unknown right {right!r}")


#: The principal of every request when access control is off.
OPEN = Principal("anonymous", admin=True, scope="anonymous")


def parse_api_key(text: str) -> tuple[str, str]:
    """`NAME=SECRET` -> (name, secret); ValueError saying what is wanted."""
    name, sep, secret = text.partition("=")
    name = name.strip()
    if not sep or not _KEY_NAME.fullmatch(name):
        raise ValueError("an API key is NAME=SECRET, NAME of 1-64 letters, digits and . _ : -")
    if len(secret) < 16:
        raise ValueError(f"the secret of API key {name!r} is shorter than 16 characters")
    if len(secret) > 4096 or not secret.isprintable() or secret != secret.strip():
        raise ValueError(f"the secret of API key {name!r} must be 16-4096 printable characters, no surrounding space")
    return name, secret


def read_keys_file(path: str) -> dict[str, str]:
    """A file of `NAME=SECRET` lines (blank lines and `#` comments skipped); InvalidInput naming the line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read the API keys file: {getattr(exc, 'strerror', None) or exc}") from None
    keys: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            name, secret = parse_api_key(line)
        except ValueError as exc:
            raise InvalidInput(f"{path}:{number}: {exc}") from None
        if name in keys:
            raise InvalidInput(f"{path}:{number}: API key {name!r} is defined twice")
        keys[name] = secret
    return keys


def _secret_algorithms(secret: bytes) -> list[str]:
    return [alg for alg, need in _HMAC_MIN_BYTES.items() if len(secret) >= need]


def _public_key_algorithms(pem: bytes) -> tuple[Any, list[str]]:
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        raise InvalidInput("a JWT public key needs the cryptography package: pip install 'ssehub[crypto]'") from None
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise InvalidInput(f"not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InvalidInput(f"an RSA key of {key.key_size} bits is too weak: use 2048 bits or more")
        return key, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
        alg = by_curve.get(key.curve.name)
        if alg is None:
            raise InvalidInput(f"elliptic curve {key.curve.name} is not one JWTs use")
        return key, [alg]
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, ["EdDSA"]
    raise InvalidInput(f"a {type(key).__name__} cannot verify JWTs")


def load_private_key(pem: bytes) -> tuple[Any, str]:
    """A PEM private key, and the algorithm a token signed with it uses by default (`ssehub token --private-key`)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError:
        raise InvalidInput("a private key needs the cryptography package: pip install 'ssehub[crypto]'") from None
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"not an unencrypted PEM private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
        if key.curve.name not in by_curve:
            raise InvalidInput(f"elliptic curve {key.curve.name} is not one JWTs use")
        return key, by_curve[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key, "EdDSA"
    raise InvalidInput(f"a {type(key).__name__} cannot sign JWTs")


def mint_token(
    key: str | bytes | Any,
    *,
    subscribe: Sequence[str] = (),
    publish: Sequence[str] = (),
    cancel: Sequence[str] = (),
    agents: Sequence[str] = (),
    ttl: float = 3600.0,
    subject: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    algorithm: str = "HS256",
    headers: Mapping[str, str] | None = None,
) -> str:
    """A signed token with these rights, valid for `ttl` seconds (`ssehub token` prints one)."""
    import jwt

    if ttl <= 0:
        raise InvalidInput("a token's time to live must be positive")
    rights: dict[str, list[str]] = {}
    for right, patterns in ((SUBSCRIBE, subscribe), (PUBLISH, publish), (CANCEL, cancel), (AGENTS, agents)):
        if patterns:
            Patterns(patterns)  # refuse now what the hub would refuse later
            rights[right] = list(patterns)
    now = time.time()
    # Rounded up: a token is never valid for less than it was asked to be.
    claims: dict[str, Any] = {"iat": int(now), "exp": math.ceil(now + ttl), CLAIM: rights}
    if subject is not None:
        claims["sub"] = subject
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    if algorithm in _HMAC_MIN_BYTES:
        raw = key.encode() if isinstance(key, str) else key
        if isinstance(raw, bytes) and algorithm not in _secret_algorithms(raw):
            raise InvalidInput(f"{algorithm} needs a secret of at least {_HMAC_MIN_BYTES[algorithm]} bytes")
    try:
        return jwt.encode(claims, key, algorithm=algorithm, headers=dict(headers) if headers else None)
    except (jwt.PyJWTError, NotImplementedError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot sign a {algorithm} token with this key: {exc}") from None


def _string_list(rights: Mapping[str, Any], right: str) -> tuple[str, ...]:
    value = rights.get(right, [])
    if not isinstance(value, list) or len(value) > MAX_PATTERNS or not all(isinstance(v, str) for v in value):
        raise Unauthorized(f"the token's {CLAIM}.{right} claim must be a list of at most {MAX_PATTERNS} strings")
    return tuple(value)


class Policy:
    """The credentials a hub accepts, and the tokens it mints. `Policy()` accepts none: access control is off."""

    def __init__(
        self,
        keys: Mapping[str, str] | None = None,
        *,
        jwt_secret: str | None = None,
        jwt_public_key: bytes | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        token_ttl: float = 900.0,
    ) -> None:
        self.keys = dict(keys or {})
        for name, secret in self.keys.items():
            parse_api_key(f"{name}={secret}")
        # sha256(secret) -> (name, secret): a lookup that cannot be timed into revealing the secret.
        self._by_digest = {hashlib.sha256(s.encode()).digest(): (n, s.encode()) for n, s in self.keys.items()}
        if len(self._by_digest) != len(self.keys):
            raise InvalidInput("two API keys have the same secret")
        self.audience, self.issuer, self.leeway, self.token_ttl = audience, issuer, leeway, token_ttl
        if token_ttl <= 0:
            raise InvalidInput("token_ttl must be positive")
        self._verify_key: Any = None
        self._algorithms: list[str] = []
        if jwt_secret is not None and jwt_public_key is not None:
            raise InvalidInput("give a JWT secret or a JWT public key, not both")
        if jwt_secret is not None:
            self._verify_key = jwt_secret.encode()
            self._algorithms = _secret_algorithms(self._verify_key)
            if not self._algorithms:
                raise InvalidInput("the JWT secret must be at least 32 bytes (RFC 7518: as long as the HS256 hash)")
        elif jwt_public_key is not None:
            self._verify_key, self._algorithms = _public_key_algorithms(jwt_public_key)
        # What the hub signs its own tokens with: the JWT secret, else a key derived from every API key.
        self._mint_key: bytes | None = None
        if jwt_secret is not None:
            self._mint_key = jwt_secret.encode()
        elif self.keys:
            material = b"\0".join(sorted(s.encode() for s in self.keys.values()))
            self._mint_key = hmac.new(material, b"ssehub: the key of the tokens a hub mints", hashlib.sha256).digest()
        self._verifier: Any = None
        # Tokens verified, by their exact text (so by their signature too), and who they stand for.
        self._verified: dict[str, Principal] = {}

    @property
    def enabled(self) -> bool:
        """Whether any credential is configured: then every request needs one."""
        return bool(self.keys) or self._verify_key is not None

    @property
    def can_mint(self) -> bool:
        return self._mint_key is not None

    def describe(self) -> str:
        """What it accepts, for the start-up banner; no secrets."""
        if not self.enabled:
            return "no credentials"
        parts = []
        if self.keys:
            parts.append(
                f"{len(self.keys)} API key{'s' if len(self.keys) > 1 else ''} ({', '.join(sorted(self.keys))})"
            )
        if self._algorithms:
            parts.append(f"JWTs ({', '.join(self._algorithms)})")
        return " and ".join(parts)

    # -- authenticating --------------------------------------------------------------------------------------

    def authenticate(self, credential: str | None) -> Principal:
        """The principal a credential stands for; `OPEN` when access control is off."""
        if not self.enabled:
            return OPEN
        if not credential:
            raise Unauthorized("this hub needs credentials: Authorization: Bearer <key or token>")
        found = self._by_digest.get(hashlib.sha256(credential.encode()).digest())
        if found is not None and hmac.compare_digest(found[1], credential.encode()):
            return Principal(f"key:{found[0]}", admin=True, scope=f"key:{found[0]}")
        if credential.count(".") == 2:
            # Verifying a JWT costs some 90 µs, a third of a publish: each one verified is kept until it expires.
            cached = self._verified.get(credential)
            if cached is not None and cached.expires is not None and cached.expires > time.time():
                return cached
            principal = self._verify(credential)
            if len(self._verified) >= VERIFIED_CACHE:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[credential] = principal
            return principal
        raise Unauthorized("unknown API key")

    def _verify(self, token: str) -> Principal:
        import jwt

        if self._verifier is None:
            self._verifier = jwt.PyJWT({"require": ["exp"], "enforce_minimum_key_length": True})
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") == MINTED_KID and self._mint_key is not None:
                key: Any = self._mint_key
                algorithms = ["HS256"]
            elif self._verify_key is not None:
                key, algorithms = self._verify_key, self._algorithms
            else:
                raise Unauthorized("this hub accepts API keys only, not tokens")
            claims = self._verifier.decode(
                token, key, algorithms=algorithms, audience=self.audience, issuer=self.issuer, leeway=self.leeway
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the token has expired: get a fresh one") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return self._principal(claims, token)

    def _principal(self, claims: Mapping[str, Any], token: str) -> Principal:
        rights = claims.get(CLAIM, {})
        if not isinstance(rights, dict):
            raise Unauthorized(f"the token's {CLAIM} claim must be an object")
        subject = claims.get("sub")
        if subject is not None and (not isinstance(subject, str) or not 1 <= len(subject) <= 200):
            raise Unauthorized("the token's sub claim must be a string of 1-200 characters")
        try:
            patterns = {right: _patterns(_string_list(rights, right)) for right in (SUBSCRIBE, PUBLISH, CANCEL, AGENTS)}
        except InvalidInput as exc:
            raise Unauthorized(f"the token's {CLAIM} claim has an {exc.message}") from None
        exp = claims["exp"]
        return Principal(
            f"token:{subject}" if subject else "token",
            subject=subject,
            subscribe=patterns[SUBSCRIBE],
            publish=patterns[PUBLISH],
            cancel=patterns[CANCEL],
            agents=patterns[AGENTS],
            expires=float(exp) + self.leeway,
            # A token without a subject is its own scope: a refreshed one is somebody new.
            scope=f"sub:{subject}" if subject else "jwt:" + hashlib.sha256(token.encode()).hexdigest()[:32],
        )

    # -- authorising -------------------------------------------------------------------------------------------

    @staticmethod
    def authorize(principal: Principal, right: str, resource: str) -> None:
        if not principal.may(right, resource):
            raise forbidden(principal, right, resource)

    def check(self, credential: str | None, right: str, resource: str) -> Principal:
        principal = self.authenticate(credential)
        self.authorize(principal, right, resource)
        return principal

    # -- minting ---------------------------------------------------------------------------------------------------

    def mint(
        self,
        *,
        subscribe: Sequence[str] = (),
        publish: Sequence[str] = (),
        cancel: Sequence[str] = (),
        agents: Sequence[str] = (),
        subject: str | None = None,
        ttl: float | None = None,
    ) -> str:
        """A token of the hub's own (HS256, kid `ssehub`) with these rights; `ttl` defaults to `token_ttl`."""
        if self._mint_key is None:
            raise InvalidInput("this hub cannot mint tokens: it needs a JWT secret or an API key")
        return mint_token(
            self._mint_key,
            subscribe=subscribe,
            publish=publish,
            cancel=cancel,
            agents=agents,
            subject=subject,
            ttl=self.token_ttl if ttl is None else ttl,
            audience=self.audience,
            issuer=self.issuer,
            headers={"kid": MINTED_KID},
        )

    def run_token(self, run_topic: str) -> str | None:
        """The token handed to whoever started a run: read and cancel that run, nothing else. None: cannot mint.

        It has no `sub`: whoever holds it, a browser a back end gave it to included, owns no other run.
        """
        if not self.enabled or self._mint_key is None:
            return None
        return self.mint(subscribe=[run_topic], cancel=[run_topic])

    # -- signed values (the demo page's browser identity) ---------------------------------------------------------

    def sign(self, value: str) -> str:
        """`value.signature`: a value a client keeps and gives back, which it cannot forge."""
        if self._mint_key is None:
            raise InvalidInput("this hub cannot sign: it needs a JWT secret or an API key")
        return f"{value}.{self._signature(value)}"

    def unsign(self, signed: str | None) -> str | None:
        if self._mint_key is None or not signed or "." not in signed:
            return None
        value, _, signature = signed.rpartition(".")
        return value if hmac.compare_digest(signature, self._signature(value)) else None

    def _signature(self, value: str) -> str:
        assert self._mint_key is not None
        return hmac.new(self._mint_key, b"signed value\0" + value.encode(), hashlib.sha256).hexdigest()[:32]


def forbidden(principal: Principal, right: str, resource: str) -> Forbidden:
    """The 403 of a principal without `right` on `resource`."""
    return Forbidden(f"{principal.name} may not {_VERBS[right]} {resource!r}")


_VERBS = {
    SUBSCRIBE: "read",
    PUBLISH: "publish to",
    CANCEL: "cancel",
    AGENTS: "start the agent",
    ADMIN: "see",
}
