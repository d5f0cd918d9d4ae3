"""Redis store URLs: credentials and TLS in the URL, and nothing secret in what the server prints."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ssehub import NewEvent, StoreUnavailable, open_store
from ssehub.exceptions import InvalidInput
from support import RedisServer, ServerProcess, free_port

pytestmark = pytest.mark.redis

Start = Callable[..., ServerProcess]


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with a password for the default user and an ACL user `alice`."""
    server = RedisServer(tmp_path / "locked", persistent=False)
    server.extra = ["--requirepass", "s3cret", "--user", "alice", "on", ">alice-pw", "~*", "&*", "+@all"]
    server.ready_url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
    server.start()
    yield server
    server.kill()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=ssehub test CA")  # fmt: skip
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    (directory / "san.cnf").write_text("subjectAltName = IP:127.0.0.1\n")
    run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "1", "-out", str(cert), "-extfile", str(directory / "san.cnf"),
    )  # fmt: skip
    return ca, cert, key


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    """A private redis-server that speaks only TLS (and wants a password), and the CA that signed it."""
    ca, cert, key = make_certificates(tmp_path / "certs")
    server = RedisServer(tmp_path / "tls", persistent=False)
    tls_port, plain = server.port, free_port()
    server.port = plain  # a plain port on loopback only to see it is up; clients use the TLS one
    server.extra = [
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--requirepass", "tls-pw",
    ]  # fmt: skip
    server.ready_url = f"redis://:tls-pw@127.0.0.1:{plain}/0"
    server.url = f"rediss://:tls-pw@127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
    server.start()
    yield server, ca
    server.kill()


async def roundtrip(url: str) -> None:
    store = open_store(url)
    await store.start()
    try:
        assert await store.append("t", [NewEvent("n", "1")]) == [1]
        page = await store.read("t", 0, 10)
        assert page is not None and [e.data for e in page.events] == ["1"]
    finally:
        await store.aclose()


async def test_credentials_in_the_url(locked_redis: RedisServer) -> None:
    port = locked_redis.port
    await roundtrip(f"redis://:s3cret@127.0.0.1:{port}/0?prefix=default-user:")
    await roundtrip(f"redis://alice:alice-pw@127.0.0.1:{port}/0?prefix=alice:")
    await roundtrip(f"redis://alice:alice%2Dpw@127.0.0.1:{port}/0?prefix=quoted:")  # percent-encoded
    for wrong in (f"redis://alice:nope@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        store = open_store(wrong)
        await store.start()
        try:
            with pytest.raises(StoreUnavailable) as refused:
                await store.append("t", [NewEvent("n", "1")])
            assert "nope" not in refused.value.message  # the error names the problem, never the password
            assert any(w in refused.value.message.lower() for w in ("password", "auth", "noperm"))
        finally:
            await store.aclose()


async def test_rediss_with_a_ca_in_the_url(tls_redis: tuple[RedisServer, Path]) -> None:
    server, _ = tls_redis
    await roundtrip(f"{server.url}&prefix=tls:")
    # Without the CA, the server's certificate is not trusted: a clear refusal, nothing written.
    untrusted = open_store(server.url.split("?")[0])
    await untrusted.start()
    try:
        with pytest.raises(StoreUnavailable, match="certificate"):
            await untrusted.append("t", [NewEvent("n", "1")])
    finally:
        await untrusted.aclose()


async def test_a_server_over_tls_with_a_password_prints_no_secret(
    server: Start, tls_redis: tuple[RedisServer, Path]
) -> None:
    redis_server, _ = tls_redis
    node = server("--store", f"{redis_server.url}&prefix=srv:", "--workers", "2")
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{node.url}/topics/t/events", json={"data": 1})
        assert r.json() == {"ids": [1]}
    node.stop()
    out = node.output()
    assert f"ssehub serving RedisStore('127.0.0.1:{redis_server.url.split(':')[3].split('/')[0]}'" in out
    assert "tls-pw" not in out


def test_bad_redis_urls_are_refused_clearly() -> None:
    for url, message in [
        ("redis://127.0.0.1:6379/0?cluster=maybe", "?cluster= takes yes or no"),
        ("redis://127.0.0.1:6379/0?prefix={x}", "without { or }"),
        ("redis://127.0.0.1:6379/0?max_connections=0", "must be from 1 to 10000"),
        ("redis://127.0.0.1:99999/0", "bad Redis URL"),
    ]:
        with pytest.raises(InvalidInput, match=message.replace("?", r"\?").replace("{", r"\{").replace("}", r"\}")):
            open_store(url)
