"""ssehub.access, the policy with no HTTP in it: topic patterns, API keys, signed tokens, minting."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ssehub.access import (
    ADMIN,
    AGENTS,
    CANCEL,
    OPEN,
    PUBLISH,
    SUBSCRIBE,
    Patterns,
    Policy,
    load_private_key,
    mint_token,
    parse_api_key,
    read_keys_file,
)
from ssehub.exceptions import Forbidden, InvalidInput, TokenExpired, Unauthorized

SECRET = "a-jwt-secret-of-at-least-32-bytes!!"
KEY = "deploy-key-0123456789"


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("chat/*", "chat/a", True),
        ("chat/*", "chat/", True),
        ("chat/*", "chat/a/b", False),
        ("chat/*", "chat", False),
        ("chat/**", "chat/a", True),
        ("chat/**", "chat/a/b/c", True),
        ("chat/**", "chat", False),
        ("chat/**", "chatter/a", False),
        ("runs/ab*", "runs/abc", True),
        ("runs/ab*", "runs/ab", True),
        ("runs/ab*", "runs/abc/x", False),
        ("runs/abc", "runs/abc", True),
        ("runs/abc", "runs/abcd", False),
        ("runs/abc", "runs/ab", False),
        ("**", "anything/at/all", True),
        ("*", "one", True),
        ("*", "one/two", False),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/b/x/c", False),
        ("a/**/c", "a/b/x/c", True),
        ("a.b", "aXb", False),  # a dot is a dot, not a regex
        ("demo/*/sessions/*", "demo/x1/sessions/s2", True),
    ],
)
def test_pattern_rule(pattern: str, name: str, matches: bool) -> None:
    assert Patterns([pattern]).matches(name) is matches


def test_several_patterns_and_none() -> None:
    patterns = Patterns(["runs/abc", "chat/*", "logs/**"])
    assert [patterns.matches(n) for n in ("runs/abc", "chat/x", "logs/a/b", "runs/abd", "chat/x/y")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert not Patterns().matches("anything") and not Patterns()


@pytest.mark.parametrize("bad", ["", "a b", "x" * 201, "a/***", "é", "a?b"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        Patterns([bad])


@pytest.mark.parametrize(
    ("patterns", "prefix", "scan"),
    [
        (["runs/abc"], "", "runs/abc"),
        (["runs/abc", "runs/abd"], "", "runs/ab"),
        (["runs/*"], "", "runs/"),
        (["runs/*"], "runs/x", "runs/x"),
        (["runs/*", "chat/*"], "", ""),
        (["runs/*"], "chat/", None),
        (["**"], "build-", "build-"),
    ],
)
def test_listing_scans_the_narrowest_prefix(patterns: list[str], prefix: str, scan: str | None) -> None:
    assert Patterns(patterns).listing_prefix(prefix) == scan


def token(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256", **headers: str) -> str:
    return jwt.encode({"exp": time.time() + 60, **claims}, key, algorithm=algorithm, headers=headers or None)


def test_api_keys_by_name() -> None:
    policy = Policy({"deploy": KEY, "ops": "ops-key-0123456789ab"})
    principal = policy.authenticate(KEY)
    assert principal.name == "key:deploy" and principal.admin
    assert all(principal.may(right, "any/topic") for right in (SUBSCRIBE, PUBLISH, CANCEL, AGENTS, ADMIN))
    with pytest.raises(Unauthorized, match="unknown API key"):
        policy.authenticate(KEY + "x")
    with pytest.raises(Unauthorized) as missing:
        policy.authenticate(None)
    assert type(missing.value) is Unauthorized
    with pytest.raises(InvalidInput, match="same secret"):
        Policy({"a": KEY, "b": KEY})


def test_no_credentials_configured_means_open() -> None:
    policy = Policy()
    assert not policy.enabled and policy.authenticate(None) is OPEN and policy.authenticate("whatever") is OPEN
    assert not policy.can_mint and policy.run_token("runs/x") is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("noequals", "NAME=SECRET"),
        ("=secret-0123456789", "NAME=SECRET"),
        ("bad name=secret-0123456789", "NAME=SECRET"),
        ("short=abc", "shorter than 16"),
        ("spaced= secret-0123456789", "printable"),
    ],
)
def test_api_key_syntax(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_api_key(text)


def test_keys_file(tmp_path: Any) -> None:
    path = tmp_path / "keys"
    path.write_text("# the deploy pipeline\ndeploy=deploy-key-0123456789\n\n  ops=ops-key-0123456789ab\n")
    assert read_keys_file(str(path)) == {"deploy": KEY, "ops": "ops-key-0123456789ab"}
    path.write_text("deploy=deploy-key-0123456789\nbroken\n")
    with pytest.raises(InvalidInput, match=r"keys:2: an API key is NAME=SECRET"):
        read_keys_file(str(path))
    with pytest.raises(InvalidInput, match="cannot read"):
        read_keys_file(str(tmp_path / "nope"))


def test_token_claims_become_rights() -> None:
    policy = Policy(jwt_secret=SECRET)
    claims = {"sub": "alice", "ssehub": {"subscribe": ["runs/abc", "chat/*"], "publish": ["chat/alice/**"]}}
    principal = policy.authenticate(token(claims))
    assert principal.name == "token:alice" and principal.subject == "alice" and not principal.admin
    assert principal.may(SUBSCRIBE, "runs/abc") and principal.may(SUBSCRIBE, "chat/x")
    assert not principal.may(SUBSCRIBE, "runs/abd") and not principal.may(PUBLISH, "chat/x")
    assert principal.may(PUBLISH, "chat/alice/a/b") and principal.may(CANCEL, "chat/alice/x")  # publish implies cancel
    assert not principal.may(AGENTS, "chat") and not principal.may(ADMIN, "metrics")
    assert principal.expires is not None and principal.expires > time.time()
    policy.authorize(principal, SUBSCRIBE, "runs/abc")
    with pytest.raises(Forbidden, match="token:alice may not read 'runs/abd'"):
        policy.authorize(principal, SUBSCRIBE, "runs/abd")


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: token({}, key="another-secret-that-is-32-bytes-long"), "Signature verification failed"),
        (lambda: jwt.encode({"ssehub": {}}, SECRET, algorithm="HS256"), '"exp" claim'),
        (lambda: token({"ssehub": {"subscribe": "runs/*"}}), "must be a list"),
        (lambda: token({"ssehub": {"subscribe": ["bad topic"]}}), "invalid topic pattern"),
        (lambda: token({"ssehub": ["subscribe"]}), "must be an object"),
        (lambda: token({"sub": 42}), "(?i)sub"),
        (lambda: token({"aud": "somebody"}), "audience"),
        (lambda: "a.b.c", "invalid token"),
        (lambda: jwt.encode({"exp": time.time() + 60}, None, algorithm="none"), "not allowed"),
    ],
)
def test_bad_tokens_are_401(make: Any, error: str) -> None:
    with pytest.raises(Unauthorized, match=error) as refused:
        Policy(jwt_secret=SECRET).authenticate(make())
    assert type(refused.value) is Unauthorized


def test_expired_token_says_so() -> None:
    policy = Policy(jwt_secret=SECRET)
    with pytest.raises(TokenExpired):
        policy.authenticate(token({"exp": time.time() - 1}))
    lenient = Policy(jwt_secret=SECRET, leeway=30)
    principal = lenient.authenticate(token({"exp": int(time.time()) - 1}))
    assert principal.expires is not None and principal.expires > time.time()  # a stream ends at exp + leeway


def test_audience_and_issuer() -> None:
    policy = Policy(jwt_secret=SECRET, audience="hub", issuer="https://id.example.com")
    assert policy.authenticate(token({"aud": "hub", "iss": "https://id.example.com"}))
    for claims in (
        {"aud": "hub"},
        {"iss": "https://id.example.com"},
        {"aud": "other", "iss": "https://id.example.com"},
    ):
        with pytest.raises(Unauthorized):
            policy.authenticate(token(claims))


def test_secrets_too_short_for_hmac_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at least 32 bytes"):
        Policy(jwt_secret="short")
    # A 32-byte secret is good for HS256 only: a token signed with HS512 and that secret is refused.
    with pytest.raises(Unauthorized, match="not allowed"):
        Policy(jwt_secret=SECRET).authenticate(token({}, key=SECRET * 2, algorithm="HS512"))


def pem(public: Any) -> bytes:
    return bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.mark.parametrize(
    ("private", "algorithm"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
)
def test_public_key_tokens(private: Any, algorithm: str) -> None:
    policy = Policy(jwt_public_key=pem(private.public_key()))
    principal = policy.authenticate(token({"ssehub": {"subscribe": ["a/*"]}}, key=private, algorithm=algorithm))
    assert principal.may(SUBSCRIBE, "a/b")
    # The classic confusion: a token "signed" with HS256 using the public key as the secret.
    forged = jwt.encode(
        {"exp": time.time() + 60, "ssehub": {"subscribe": ["**"]}}, "x" * 64, algorithm="HS256"
    )  # what an attacker can make
    with pytest.raises(Unauthorized):
        policy.authenticate(forged)
    assert not policy.can_mint  # nothing to sign with: no run tokens, no demo


def test_weak_rsa_keys_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidInput, match="too weak"):
        Policy(jwt_public_key=pem(weak.public_key()))
    with pytest.raises(InvalidInput, match="not a PEM public key"):
        Policy(jwt_public_key=b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


def test_minted_tokens() -> None:
    policy = Policy({"deploy": KEY}, token_ttl=60)  # no JWT secret: the key is derived from the API keys
    assert policy.can_mint
    minted = policy.mint(subscribe=["runs/abc"], cancel=["runs/abc"], subject="bob")
    assert jwt.get_unverified_header(minted)["kid"] == "ssehub"
    principal = policy.authenticate(minted)
    assert principal.may(SUBSCRIBE, "runs/abc") and principal.may(CANCEL, "runs/abc")
    assert not principal.may(PUBLISH, "runs/abc") and not principal.may(SUBSCRIBE, "runs/abd")
    assert principal.subject == "bob" and principal.expires is not None
    assert principal.expires - time.time() == pytest.approx(60, abs=2)
    # Another hub configured alike accepts it; one with other keys does not.
    assert Policy({"deploy": KEY}).authenticate(minted).may(SUBSCRIBE, "runs/abc")
    with pytest.raises(Unauthorized):
        Policy({"deploy": "another-key-0123456789"}).authenticate(minted)
    # A run's token reads and cancels that run and owns nothing else: it has no subject.
    run = policy.authenticate(policy.run_token("runs/xyz") or "")
    assert run.subject is None and run.may(CANCEL, "runs/xyz") and not run.may(SUBSCRIBE, "runs/abc")


def test_minting_with_a_jwt_secret_matches_what_operators_mint() -> None:
    policy = Policy(jwt_secret=SECRET, audience="hub")
    by_hub = policy.authenticate(policy.mint(agents=["chat"]))
    by_operator = policy.authenticate(mint_token(SECRET, agents=["chat"], audience="hub", ttl=30))
    assert by_hub.may(AGENTS, "chat") and by_operator.may(AGENTS, "chat")
    with pytest.raises(InvalidInput, match="at least 32 bytes"):
        mint_token("short", agents=["chat"])
    with pytest.raises(InvalidInput, match="pattern"):
        mint_token(SECRET, subscribe=["bad topic"])


def test_private_keys_for_ssehub_token() -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    data = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key, algorithm = load_private_key(data)
    assert algorithm == "ES384"
    signed = mint_token(key, subscribe=["t"], algorithm=algorithm)
    assert Policy(jwt_public_key=pem(private.public_key())).authenticate(signed).may(SUBSCRIBE, "t")
    with pytest.raises(InvalidInput, match="PEM private key"):
        load_private_key(b"not a key")


def test_signed_values() -> None:
    policy = Policy({"deploy": KEY})
    signed = policy.sign("browser-1")
    assert policy.unsign(signed) == "browser-1"
    assert policy.unsign(signed[:-1] + ("0" if signed[-1] != "0" else "1")) is None
    assert policy.unsign("browser-1") is None and policy.unsign(None) is None
    assert Policy({"deploy": "another-key-0123456789"}).unsign(signed) is None


def test_a_verified_token_is_remembered_until_it_expires() -> None:
    policy = Policy(jwt_secret=SECRET)
    short = token({"exp": time.time() + 1, "ssehub": {"subscribe": ["t"]}})
    assert policy.authenticate(short) is policy.authenticate(short)  # verified once
    time.sleep(max(0.0, jwt.decode(short, options={"verify_signature": False})["exp"] - time.time()) + 0.05)
    with pytest.raises(TokenExpired):
        policy.authenticate(short)
    # A token that differs by one character is another token: verified, and refused.
    with pytest.raises(Unauthorized):
        policy.authenticate(short[:-2] + ("AA" if not short.endswith("AA") else "BB"))
