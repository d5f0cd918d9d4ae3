"""From an exception to the JSON error the client gets.

`status` and `code` live on each `SSEHubError` class, so the mapping is short:
ssehub's own errors answer what they say, Starlette's routing errors (404, 405)
answer in the same shape, a client that disconnected before its request body
was read gets one log line (nobody is there to answer), and anything else is a
500 whose traceback goes to the log and never to the client.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..exceptions import Forbidden, Overloaded, SSEHubError, TokenExpired, TooManyRequests, Unauthorized
from .responses import error_response

__all__ = ["EXCEPTION_HANDLERS", "response_for"]

log = logging.getLogger("ssehub.asgi")


def response_for(exc: Exception, method: str, path: str, *, log_unhandled: bool = True) -> Response:
    if isinstance(exc, SSEHubError):
        headers = None
        if isinstance(exc, TokenExpired):
            headers = {"www-authenticate": 'Bearer error="invalid_token", error_description="the token has expired"'}
        elif isinstance(exc, Unauthorized) and not isinstance(exc, Forbidden):
            headers = {"www-authenticate": "Bearer"}
        elif isinstance(exc, TooManyRequests):
            headers = {"retry-after": "1"}  # a limit on concurrent work: a second is a fair guess
        elif isinstance(exc, Overloaded):
            headers = {"retry-after": "5"}  # a full server: a few seconds, or another node meanwhile
        return error_response(exc.status, exc.code, exc.message, headers)
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)
    if isinstance(exc, ClientDisconnect):
        log.info("%s %s: the client disconnected before its request body was read; nothing was done", method, path)
        return error_response(400, "client_disconnected", "the request body was cut off")
    if log_unhandled:
        log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def _handle(request: Request, exc: Exception) -> Response:
    # Starlette raises an unhandled exception again after answering, for the server to log: logging it
    # here as well would print every traceback twice.
    return response_for(exc, request.method, request.url.path, log_unhandled=False)


# For Starlette's exception middleware: every route's errors take the same path as the hot routes'.
EXCEPTION_HANDLERS = {SSEHubError: _handle, HTTPException: _handle, ClientDisconnect: _handle, Exception: _handle}
