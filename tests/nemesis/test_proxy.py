"""The harness's proxy over real sockets: it forwards, balances, cuts mid-chunk, delays and partitions."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator

from .proxy import Proxy


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An upstream that answers every chunk with b'<port>:' + chunk; it records what it received."""
    received: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        port = writer.get_extra_info("sockname")[1]
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                received.append(data)
                writer.write(f"{port}:".encode() + data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)


async def roundtrip(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    return answer


async def test_forwards_to_the_upstreams_in_turn_and_skips_one_that_is_down() -> None:
    async with echo_server() as (a, _), echo_server() as (b, _):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            down = s.getsockname()[1]  # bound, not listening: connections are refused
            proxy = await Proxy("front", [a, down, b]).start()
            try:
                answers = [await roundtrip(proxy.port, b"hi") for _ in range(3)]
            finally:
                await proxy.aclose()
    assert answers == [f"{a}:hi".encode(), f"{b}:hi".encode(), f"{a}:hi".encode()]
    assert proxy.accepted == 3 and proxy.refused == 0


async def test_a_cut_forwards_half_a_chunk_then_resets_both_sides() -> None:
    async with echo_server() as (port, received):
        proxy = await Proxy("front", [port]).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"first")
            await writer.drain()
            assert await reader.read(100) == f"{port}:first".encode()
            cut = asyncio.create_task(proxy.cut(1.0, random.Random(1), idle=2))
            await asyncio.sleep(0.05)
            writer.write(b"0123456789")  # upstream gets 01234, then the reset
            await writer.drain()
            assert await cut == 1
            tail = b""
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(100):
                    tail += chunk
            assert tail == b""
            writer.close()
            assert received == [b"first", b"01234"]
            assert proxy.links == 0
        finally:
            await proxy.aclose()


async def test_a_cut_of_an_idle_connection_happens_anyway() -> None:
    async with echo_server() as (port, _):
        proxy = await Proxy("front", [port]).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"x")
            await reader.read(100)
            assert await proxy.cut(1.0, idle=0.1) == 1
            with contextlib.suppress(ConnectionError):
                assert await reader.read(100) == b""
            writer.close()
        finally:
            await proxy.aclose()


async def test_a_partition_holds_everything_until_it_heals_and_latency_keeps_order() -> None:
    async with echo_server() as (port, received):
        proxy = await Proxy("redis", [port]).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"a")
            assert await reader.read(100) == f"{port}:a".encode()
            proxy.partition()
            writer.write(b"b")
            await writer.drain()
            late = asyncio.create_task(roundtrip(proxy.port, b"new"))  # a connection made during the partition
            await asyncio.sleep(0.3)
            assert received == [b"a"] and not late.done()
            proxy.latency = 0.05
            proxy.heal()
            assert await reader.read(100) == f"{port}:b".encode()
            assert await late == f"{port}:new".encode()
            for word in (b"c", b"d", b"e"):
                writer.write(word)
                await writer.drain()
                assert await reader.read(100) == f"{port}:".encode() + word
            writer.close()
        finally:
            await proxy.aclose()
