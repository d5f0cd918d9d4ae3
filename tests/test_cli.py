"""The client commands (`tail`, `publish`, `topics`, `info`, `close`, `delete`, `run`, `cancel`), run as commands
against a real `ssehub serve`: their output, their one-line errors and their exit codes (`ssehub --help`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

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
    srv = server("--store", "memory://", "--token", "s3cret-0123456789")
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(ssehub("topics", url=nowhere), "topics", f"cannot reach {nowhere}: connection refused")
    assert_one_line_error(ssehub("tail", "t", url=nowhere), "tail", "connection refused")
    assert_one_line_error(ssehub("tail", "missing", url=srv.url), "tail", "needs credentials")
    missing = ssehub("tail", "missing", "--token", "s3cret-0123456789", url=srv.url)
    assert_one_line_error(missing, "tail", "no topic 'missing'")
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
        env={**os.environ, "SSEHUB_TOKEN": "s3cret-0123456789"},
        timeout=60,
    )
    assert (env_token.returncode, env_token.stdout) == (0, "1\n"), env_token.stderr


def test_info_close_delete_and_tail_formats(server: Start) -> None:
    srv = server("--store", "memory://")
    httpx.post(
        f"{srv.url}/topics/jobs/1/events", json=[{"event": "log", "data": {"n": 1}}, {"event": "log", "data": "two"}]
    )
    info = ssehub("info", "jobs/1", url=srv.url)
    assert info.returncode == 0, info.stderr
    rows = {line[:11].strip(): line[11:].strip() for line in info.stdout.splitlines()}  # "key  value", aligned
    assert rows["topic"] == "jobs/1" and rows["status"] == "open" and rows["events"] == "1..2"
    as_json = json.loads(ssehub("info", "jobs/1", "--json", url=srv.url).stdout)
    assert (as_json["topic"], as_json["last_id"], as_json["status"]) == ("jobs/1", 2, "open")

    closed = ssehub("close", "jobs/1", "--status", "failed", url=srv.url)
    assert (closed.returncode, closed.stdout) == (0, "jobs/1 failed at id 2\n"), closed.stderr
    raw = ssehub("tail", "jobs/1", "--after", "0", "--format", "raw", url=srv.url)
    assert (raw.returncode, raw.stdout) == (0, '{"n":1}\n"two"\n'), raw.stderr
    lines = ssehub("tail", "jobs/1", "--after", "0", "--format", "json", url=srv.url).stdout.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "event": "log", "data": {"n": 1}},
        {"id": 2, "event": "log", "data": "two"},
    ]
    deleted = ssehub("delete", "jobs/1", url=srv.url)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted jobs/1\n")

    assert_one_line_error(ssehub("info", "jobs/1", url=srv.url), "info", "no topic 'jobs/1'")
    assert_one_line_error(ssehub("delete", "jobs/1", url=srv.url), "delete", "no topic 'jobs/1'")
    assert_one_line_error(ssehub("close", "jobs/1", url=srv.url), "close", "no topic")
    assert_one_line_error(ssehub("info", "bad topic!", url=srv.url), "info", "invalid topic name")
    usage = ssehub("close", "t", "--status", "maybe", url=srv.url)
    assert usage.returncode == 2 and "invalid choice: 'maybe'" in usage.stderr
    usage = ssehub("tail", "t", "--format", "xml", url=srv.url)
    assert usage.returncode == 2 and "invalid choice: 'xml'" in usage.stderr


def test_run_streams_a_run_and_exits_with_its_outcome(server: Start) -> None:
    srv = server("--store", "memory://", "--demo", env={"SSEHUB_DEMO_DELAY": "0"})
    done = ssehub("run", "chat", "--json", '{"message": "hi"}', "--format", "json", url=srv.url)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "done" and "You said" in events[-1]["data"]["result"]["answer"]
    run_id = done.stderr.split()[1]
    assert done.stderr == f"run {run_id}\n"
    text = ssehub("run", "chat", "--json", '{"message": "hi"}', "--format", "raw", url=srv.url)
    assert text.returncode == 0 and '{"content":"You"}' in text.stdout.splitlines()

    assert_one_line_error(ssehub("run", "nope", url=srv.url), "run", "no agent 'nope'")
    assert_one_line_error(ssehub("run", "chat", "--json", "{nope", url=srv.url), "run", "--json: not JSON")
    assert_one_line_error(ssehub("run", "chat", "--json", "[1]", url=srv.url), "run", "must be a JSON object")
    assert_one_line_error(ssehub("run", "chat", "--json", '{"message": 1}', url=srv.url), "run", '"message" must be')
    assert_one_line_error(ssehub("cancel", "nope", url=srv.url), "cancel", "no run 'nope'")
    finished = ssehub("cancel", run_id, url=srv.url)
    assert (finished.returncode, finished.stdout) == (0, f"{run_id} completed\n")


def _run_in_background(url: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssehub", "run", "chat", "--json", '{"message": "hi"}', *args, "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # On a hang, SIGABRT makes it print where each of its threads is (see `_exited`).
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
    )
    assert proc.stderr is not None and proc.stdout is not None
    run_id = proc.stderr.readline().split()[1]
    proc.stdout.readline()  # the run is streaming
    return proc, run_id


def _exited(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Its output once it has exited; one that hangs fails the test with its threads' stacks."""
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"{proc.args} did not exit; its threads:\n{err}")


def test_ctrl_c_detaches_or_cancels_and_a_cancel_elsewhere_exits_4(server: Start) -> None:
    srv = server("--store", "memory://", "--demo", env={"SSEHUB_DEMO_DELAY": "0.05"})
    detached, run_id = _run_in_background(srv.url)
    detached.send_signal(signal.SIGINT)
    out, err = _exited(detached)
    assert detached.returncode == 130
    after = re.search(r"--after (\d+),", err)
    assert after and err == (
        f"run {run_id}: detached; it goes on (ssehub tail runs/{run_id} --after {after[1]}, "
        f"or ssehub cancel {run_id})\n"
    )
    assert httpx.get(f"{srv.url}/runs/{run_id}").json()["status"] == "running"  # it goes on
    assert ssehub("cancel", run_id, url=srv.url).stdout == f"{run_id} cancelled\n"

    cancelling, run_id = _run_in_background(srv.url, "--cancel-on-exit")
    cancelling.send_signal(signal.SIGINT)
    _, err = _exited(cancelling)
    assert cancelling.returncode == 130 and err.strip().endswith(f"run {run_id}: cancelled (cancelled)"), err
    assert httpx.get(f"{srv.url}/runs/{run_id}").json()["status"] == "cancelled"

    elsewhere, run_id = _run_in_background(srv.url, "--format", "json")
    httpx.post(f"{srv.url}/runs/{run_id}/cancel").raise_for_status()
    out, _ = _exited(elsewhere)
    assert elsewhere.returncode == 4
    assert json.loads(out.splitlines()[-1])["event"] == "cancelled"
