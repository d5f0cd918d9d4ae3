"""The parts of a history: its JSON form, payload identities, and the incidents read from a hub's log."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from .history import Answer, Delivery, Fault, History, Incident, Outage, Reader, Run, Sample, payload_of
from .processes import scan_log
from .test_checker import LOST, LOST_PUBLISHES, history


def test_a_history_survives_json(tmp_path: Path) -> None:
    h = history(
        publishes=LOST_PUBLISHES,
        readers=(
            Reader("n", "node", "t", None, 1.0, (Delivery(1, "message", "a1", 1.5),), True, ((1.0, 2.0), (2.5, None))),
        ),
        epochs=LOST,
        runs=(Run("k", ("r1",), 1.0, "completed", "x", True),),
        answers=(Answer("c", "GET", "/x", 503, 1, 2),),
        samples=(Sample("hub0", 0, 1, 0.0, 1, 2, "baseline"),),
        incidents=(Incident("hub0", "ERROR x"),),
        faults=(Fault("cut", "p", 1, 2, "half"),),
        outages=(Outage("redis", 1, 2),),
    )
    h.save(tmp_path / "h.json")
    assert History.load(tmp_path / "h.json") == h
    assert json.loads((tmp_path / "h.json").read_text())["epochs"][1]["end"] == "inf"


def test_payload_identity() -> None:
    assert payload_of('{"k":"pub1.7.0","pad":"xx"}') == "pub1.7.0"
    assert payload_of('{"content":"tok"}') == '{"content":"tok"}'
    assert payload_of("not json") == "not json"


LOG = """\
INFO:     Uvicorn running on http://127.0.0.1:18911 (Press CTRL+C to quit)
2026-12-02 02:45:38,651 ERROR ssehub: unhandled error on POST /topics/t/events
Traceback (most recent call last):
  File "/x/starlette/requests.py", line 252, in stream
    raise ClientDisconnect()
starlette.requests.ClientDisconnect
ERROR:    Exception in ASGI application
Traceback (most recent call last):
  File "/x/uvicorn/protocols/http/httptools_impl.py", line 422, in run_asgi
    result = await app(  # type: ignore[func-returns-value]
starlette.requests.ClientDisconnect
2026-12-02 02:45:40,000 WARNING ssehub.redis: Redis reader: Connection closed by server.; retrying in 0.05s
2026-12-02 02:45:41,500 ERROR ssehub.runs: run x of agent 'chat' failed
"""


def test_the_errors_of_a_hub_log() -> None:
    start = datetime.datetime(2026, 12, 2, 2, 45, 38).timestamp()
    assert scan_log("hub0", LOG, start) == [
        Incident(
            "hub0",
            "2026-12-02 02:45:38,651 ERROR ssehub: unhandled error on POST /topics/t/events",
            "starlette.requests.ClientDisconnect",
            0.651,
        ),
        Incident("hub0", "ERROR:    Exception in ASGI application", "starlette.requests.ClientDisconnect", None),
        Incident("hub0", "2026-12-02 02:45:41,500 ERROR ssehub.runs: run x of agent 'chat' failed", "", 3.5),
    ]
