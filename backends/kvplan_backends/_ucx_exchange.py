"""A UCX rank's card across hosts: a ucxx listener and a stream.

`publish` opens a ucxx listener (port 0: one the system picks, which the listener
reports) on the backend's worker; each connection gets the card on a stream of its
own endpoint: 8 bytes of length (little-endian), then the card. Streams belong to an
endpoint, so two ranks fetching at once never take each other's card (tags are matched
per worker). The card carries the worker address, so ``add_peer(rank, card.metadata)``
reaches the rank as if its `metadata()` had come by any other channel:

    ucx://HOST:PORT
"""

from __future__ import annotations

import threading
import time

import numpy as np

from kvplan.errors import SpecError
from kvplan.transport import TransportError, TransportTimeout

from ._exchange import card_length


def check_port(port) -> int | None:
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, (int, np.integer)) or not 0 <= port < 65536:
        raise SpecError(f"ucx backend: listen_port must be a TCP port 0-65535 (0: one the system picks), "
                        f"got {port!r}"[:300])
    return int(port)


class CardServer:
    """A listener that sends `card` to every endpoint connecting to it; `close` before
    the worker stops (endpoints first, then the listener)."""

    def __init__(self, u, array, call, worker, port: int, card: bytes):
        self._array, self._card = array, np.frombuffer(card, np.uint8).copy()
        self._length = np.array([self._card.nbytes], "<u8")
        self._lock = threading.Lock()
        self._sent: list = []  # (endpoint, its two sends): alive until close

        def connected(conn_request):  # in the worker's progress thread: post the sends, return
            endpoint = self.listener.create_endpoint_from_conn_request(conn_request, True)
            with self._lock:
                self._sent.append((endpoint, endpoint.stream_send(self._array(self._length)),
                                   endpoint.stream_send(self._array(self._card))))

        self.listener = call(lambda: u.UCXListener.create(worker, port, connected), "listener")
        self.port = int(self.listener.port)

    def close(self, deadline: float) -> list[str]:
        """Close every card endpoint (sends not taken by then are dropped); errors as text."""
        errors = []
        with self._lock:
            sent, self._sent = self._sent, []
        for endpoint, *sends in sent:
            while not all(s.completed for s in sends) and time.monotonic() < deadline:
                time.sleep(0.001)
            try:
                endpoint.close_blocking(10_000_000, 10)
            except Exception as error:  # a peer gone before taking its card
                errors.append(f"UCX card endpoint close failed: {type(error).__name__}: {error}")
        self.listener = None
        return errors


def address(host: str, port: int) -> str:
    return f"ucx://[{host}]:{port}" if ":" in host else f"ucx://{host}:{port}"


def fetch_card(u, array, call, worker, where: str, host: str, port: int, deadline: float) -> bytes:
    """The card the listener at `host`:`port` sends: its length, then the card."""
    endpoint = call(lambda: u.UCXEndpoint.create(worker, host, port, True), "endpoint", peer=where)
    try:
        length = np.zeros(8, np.uint8)
        _receive(call, endpoint, array(length), where, deadline)
        card = np.zeros(card_length(length.tobytes(), where), np.uint8)
        _receive(call, endpoint, array(card), where, deadline)
        return card.tobytes()
    finally:
        try:
            endpoint.close_blocking(10_000_000, 10)
        except Exception:  # noqa: BLE001 - a listener that hung up first: the card (or the error) stands
            pass


def _receive(call, endpoint, buffer, where: str, deadline: float) -> None:
    request = call(lambda: endpoint.stream_recv(buffer), "stream_recv", peer=where)
    while not request.completed:
        if time.monotonic() > deadline:
            raise TransportTimeout(f"no card from the ucx listener at {where}", peer=where)
        time.sleep(0.001)
    try:
        request.check_error()
    except Exception as error:  # ucxx raises UCX* exceptions: nobody listening, a reset, a short message
        raise TransportError(f"no card from {where}: {type(error).__name__}: {error} (is a ucx backend's "
                             f"publish() listening there?)", peer=where) from error
