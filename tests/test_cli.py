"""`ssehub tail`, `ssehub publish` and `ssehub topics`, run as commands against a real `ssehub serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import httpx

from support import ServerProcess, free_port

Start = Callable[..., ServerProcess]


def ssehub(*args: str, url: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if url is not None:
        env["SSEHUB_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "ssehub", *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def tail(*args: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ssehub", "tail", *args, "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], command: str, words: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"ssehub {command}: ") and words in result.stderr, result.stderr


def test_publish_and_tail_from_a_shell(server: Start) -> None:
    srv = server("--store", "memory://")
    first = ssehub("publish", "build/42", '{"line": "compiling"}', "--event", "log", url=srv.url)
    assert (first.returncode, first.stdout, first.stderr) == (0, "1\n", "")
    # A follower started before the rest is published sees it live, then exits 0 at the close.
    follower = tail("build/42", "--after", "0", "--json", url=srv.url)
    lines = "hello\n\nworld\n[1, 2]\n" + "".join(f"line {i}\n" for i in range(3, 299))
    batch = ssehub("publish", "build/42", "-", url=srv.url, stdin=lines)
    assert batch.returncode == 0, batch.stderr
    assert batch.stdout.split() == [str(i) for i in range(2, 301)]  # the empty line is skipped
    readable = tail("build/42", "--after", "299", url=srv.url)
    again = ssehub("publish", "build/42", "done", "--event", "done", "--key", "final", url=srv.url)
    repeat = ssehub("publish", "build/42", "done", "--event", "done", "--key", "final", url=srv.url)
    assert again.stdout == repeat.stdout == "301\n"  # the same key appends once
    httpx.post(f"{srv.url}/topics/build/42/close").raise_for_status()

    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["id"] for e in events] == list(range(1, 302))
    assert events[0] == {"id": 1, "event": "log", "data": {"line": "compiling"}}
    assert events[1:4] == [
        {"id": 2, "event": "message", "data": "hello"},
        {"id": 3, "event": "message", "data": "world"},
        {"id": 4, "event": "message", "data": [1, 2]},
    ]
    assert events[-1] == {"id": 301, "event": "done", "data": "done"}

    out, err = readable.communicate(timeout=30)
    assert readable.returncode == 0, err
    assert out.splitlines() == ['300 message "line 298"', '301 done "done"']  # no colour: not a terminal

    topics = ssehub("topics", "--prefix", "build/", url=srv.url)
    assert topics.returncode == 0, topics.stderr
    assert [line.split() for line in topics.stdout.splitlines()] == [
        ["TOPIC", "LAST_ID", "STATUS", "SUBSCRIBERS"],
        ["build/42", "301", "completed", "0"],
    ]


def test_clear_errors(server: Start) -> None:
    srv = server("--store", "memory://", "--token", "s3cret")
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(ssehub("topics", url=nowhere), "topics", f"cannot reach {nowhere}: connection refused")
    assert_one_line_error(ssehub("tail", "t", url=nowhere), "tail", "connection refused")
    assert_one_line_error(ssehub("tail", "missing", url=srv.url), "tail", "no topic 'missing'")
    assert_one_line_error(ssehub("publish", "t", "x", url=srv.url), "publish", "Bearer")
    assert_one_line_error(ssehub("publish", "bad topic!", "x", url=srv.url), "publish", "invalid topic name")
    assert_one_line_error(ssehub("publish", "t", "x", "--event", "no spaces", url=srv.url), "publish", "event name")
    bad = ssehub("tail", "t", "--after", "-3", url=srv.url)
    assert bad.returncode == 2 and "--after: must be a non-negative integer" in bad.stderr
    assert "Traceback" not in bad.stderr
    env_token = subprocess.run(
        [sys.executable, "-m", "ssehub", "publish", "t", "x", "--url", srv.url],
        capture_output=True,
        text=True,
        env={**os.environ, "SSEHUB_TOKEN": "s3cret"},
        timeout=60,
    )
    assert (env_token.returncode, env_token.stdout) == (0, "1\n"), env_token.stderr
