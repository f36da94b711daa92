"""Slow clients are cut off (SPEC 9.1 rule 13): a request must be sent whole within `REQUEST_SECONDS`.

uvicorn times out idle keep-alive connections but not a client that opens a connection and then
sends its headers or body slowly, or not at all (slowloris): each such connection is held forever.
`GuardedH11Protocol` is uvicorn's h11 protocol with one timer per request, armed when the connection
opens or the next request's first bytes arrive and disarmed once h11 has the whole request; when it
fires, the client gets `408 Request Timeout` (if no answer has started) and is disconnected. Timers
live on the event loop, so other clients are never delayed by a slow one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from reconciler.eventlog import emit

REQUEST_SECONDS = 10.0
_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


class GuardedH11Protocol(H11Protocol):
    request_seconds = REQUEST_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._request_timer is None:
            self._request_timer = self.loop.call_later(self.request_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP, not on these: without it the body,
        # written after the headers, waited for the client's delayed ACK (40 ms a response on a kept-alive connection)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm()  # the first request, too, must arrive in time

    def data_received(self, data: bytes) -> None:
        self._arm()  # bytes of a request still being received (no-op while armed)
        super().data_received(data)
        if self.conn.their_state in _RECEIVED:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._request_timer = None
        if self.conn.their_state in _RECEIVED or self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        emit("http.slow_client", {"client": client, "seconds": self.request_seconds})
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_TIMEOUT)
        self.transport.close()
