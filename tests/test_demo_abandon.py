"""A demo run that nobody reads for `--demo-abandon` seconds is cancelled; one that is read is not."""

from __future__ import annotations

import json

import pytest

from ssehub import Hub
from ssehub.demo import register_demo


async def test_an_unread_demo_run_is_cancelled_and_a_read_one_completes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSEHUB_DEMO_DELAY", "0.02")  # about 3 s of answer
    async with Hub("memory://") as hub:
        register_demo(hub, abandon=0.5)
        unread = await hub.runs.start_run("chat", {"message": "hello?"})
        read = await hub.runs.start_run("chat", {"message": "I am here"})
        async with hub.subscription(read.topic, 0) as sub:
            chunks = [chunk async for chunk in sub.chunks()]
        assert (await hub.runs.info(read.id)).status == "completed"
        info = await hub.runs.wait(unread)
        assert info.status == "cancelled"
        page = await hub.read(unread.topic, 0, 1000)
        assert json.loads(page.events[-1].data) == {"reason": "nobody read the answer for 0.5 seconds"}
        assert b"event: done" in b"".join(chunks)


async def test_zero_never_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSEHUB_DEMO_DELAY", "0")
    async with Hub("memory://") as hub:
        register_demo(hub, abandon=0)
        run = await hub.runs.start_run("chat", {"message": "x"})
        assert (await hub.runs.wait(run)).status == "completed"
