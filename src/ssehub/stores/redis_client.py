"""Redis clients for the Redis store: connections that know whether a command ever left.

A write whose reply was lost must not be retried blindly: Redis may have run it,
and the retry would append the events twice (the caller retries with its
Idempotency-Key instead). So redis-py's own retries stay off. But two failures
provably happen before anything is sent, and those are worth retrying at once:

- the connection could not be made (refused, timed out, Redis still loading);
- the pooled connection was already dead: the server closed it (a restart, an
  idle timeout) and its end-of-file or stray bytes wait in the buffer before we
  have asked anything. redis-py 8 skips its own check for this when maintenance
  notifications are on (its default with RESP3), and hands such a connection
  out; its next command then fails with "Connection closed by server". We check
  before every send, on every connection (pooled, cluster node, or the
  follower's own), and open a fresh connection instead.

Both raise `NotSent` (`SlowConnect` for a connection that timed out), which
the store retries within a bounded wait.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, TimeoutError
from redis.maint_notifications import MaintNotificationsConfig

__all__ = ["Client", "NotSent", "SlowConnect", "open_client"]

Client = aioredis.Redis | RedisCluster


class NotSent(ConnectionError):
    """The command never reached Redis: no connection could be made. A retry cannot run it twice."""


class SlowConnect(NotSent):
    """Making the connection took too long: Redis (or this process's event loop) is slow, not gone."""


class _Checked(AbstractConnection):
    _handshake = False

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        self._handshake = True  # it sends several commands before it reads their replies
        try:
            await super().connect_check_health(check_health, retry_socket_connect)
        except AuthenticationError:
            raise  # retrying cannot fix a password
        except TimeoutError as exc:
            raise SlowConnect(str(exc) or type(exc).__name__) from exc
        except ConnectionError as exc:
            raise NotSent(str(exc) or type(exc).__name__) from exc
        finally:
            self._handshake = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # Before a command nothing may wait in the buffer: end-of-file or bytes there mean the server
        # has closed this connection. Nothing was sent on it yet, so a new one is opened instead.
        if not self._handshake and self.is_connected and await self.can_read():
            await self.disconnect()
        await super().send_packed_command(command, check_health)


class _CheckedConnection(_Checked, Connection):
    pass


class _CheckedSSLConnection(_Checked, SSLConnection):
    pass


class _CheckedUnixConnection(_Checked, UnixDomainSocketConnection):
    pass


_CHECKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _CheckedConnection,
    SSLConnection: _CheckedSSLConnection,
    UnixDomainSocketConnection: _CheckedUnixConnection,
}


def open_client(
    url: str, *, cluster: bool, socket_timeout: float, max_connections: int, single_connection: bool = False
) -> Client:
    """A client for `url` (a Redis Cluster with `cluster`); no I/O until its first command.

    Options in the URL's query (redis-py's: `ssl_ca_certs=`, `ssl_cert_reqs=`, `protocol=` ...) win.
    """
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 5,
        "socket_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        # For Redis Enterprise and Cloud only; with it on, redis-py 8 stops checking pooled connections.
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if cluster:
        client = RedisCluster.from_url(url, max_connections=max_connections, **common)
        # RedisCluster picks its connection class itself; every node it creates takes it from these options.
        options = client.nodes_manager.connection_kwargs
        options["connection_class"] = _CHECKED[options.get("connection_class", Connection)]
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = options["connection_class"]
        return client
    parsed = cast(dict[str, Any], parse_url(url))
    parsed["connection_class"] = _CHECKED[parsed.get("connection_class", Connection)]
    pool = ConnectionPool(**{**common, "max_connections": max_connections, **parsed})
    return aioredis.Redis(connection_pool=pool, single_connection_client=single_connection)
