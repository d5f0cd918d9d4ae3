"""Hearing that the server is stopping before it waits for its connections.

ASGI servers stop in this order: stop accepting, wait for the open connections to end, and only then
run the lifespan shutdown. SSE connections never end by themselves, so a hub that drains in its
lifespan shutdown drains too late: the server waits for streams that wait for the server (uvicorn
waits forever by default, or until `timeout_graceful_shutdown`, then cuts them without a `retry:`).

The signal that starts the stop is the one thing that comes first. The server's own handler for it
is installed before the app's lifespan starts (uvicorn's `capture_signals`, gunicorn's workers, and
asyncio's `add_signal_handler` alike leave a Python-level handler), so the lifespan can wrap it: on
SIGTERM or SIGINT, `on_exit` runs in the event loop, and then the server's handler, unchanged.

Nothing is installed where no server handles the signal (its disposition is still the default), so
a hub used in a plain script never changes what Ctrl-C or `kill` does to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["EXIT_SIGNALS", "on_exit_signals"]

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_exit_signals(on_exit: Callable[[], None]) -> Iterator[None]:
    """While inside, call `on_exit()` in the running event loop first whenever an exit signal arrives."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; a server in a thread has its own way to stop
        return
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Any, Callable[[int, FrameType | None], Any]]] = {}
    for exit_signal in EXIT_SIGNALS:
        previous = signal.getsignal(exit_signal)
        if not callable(previous):
            continue  # SIG_DFL or SIG_IGN: no server is listening for it

        def handler(signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous) -> None:
            # A signal handler runs between two bytecodes of whatever the loop was doing: hand the work
            # to the loop instead of touching its state here.
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(on_exit)
            previous(signum, frame)

        signal.signal(exit_signal, handler)
        installed[exit_signal] = (previous, handler)
    try:
        yield
    finally:
        for number, (before, ours) in installed.items():
            # Put back what was there, unless someone has replaced our handler since: theirs stays.
            if signal.getsignal(number) is ours:
                signal.signal(number, before)
