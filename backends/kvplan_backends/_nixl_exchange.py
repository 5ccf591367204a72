"""A NIXL rank's card across hosts: NIXL's own metadata listener, then one NIXL READ.

NIXL agents created with a listener thread (``NixlBackend(listen_port=PORT)``) answer
`fetch_remote_metadata(agent, host, port)` with their agent metadata over TCP, and load
metadata sent to them; NIXL does the socket work in that thread (an agent without it
cannot fetch either). What NIXL metadata does not say is kvplan's part of a card (rank,
regions, engine, fingerprint), so a publishing rank registers its card bytes as one
small DRAM region and names it in its address; the fetching rank loads the peer's
agent metadata through the listener, then READs the card like any registered memory:

    nixl://HOST:PORT/AGENT?card=ADDRESS:BYTES

Nothing but NIXL travels, and the peer's agent is loaded once: ``add_peer(rank,
card.metadata)`` finds it already known.
"""

from __future__ import annotations

import time

import numpy as np

from kvplan.errors import SpecError
from kvplan.transport import TransportError, TransportTimeout

from ._exchange import MAX_CARD_BYTES


def check_port(port) -> int | None:
    """A listener port for NIXL (it cannot report a port the system picked, so not 0)."""
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, (int, np.integer)) or not 0 < port < 65536:
        raise SpecError(f"nixl backend: listen_port must be a TCP port 1-65535 peers can reach (NIXL cannot "
                        f"report a port the system picks, so not 0), got {port!r}"[:300])
    return int(port)


def serve_card(call, agent, card: bytes) -> tuple:
    """Register `card` as DRAM with `agent`: (buffer, NIXL registration); keep both
    until the agent closes."""
    buffer = np.frombuffer(card, np.uint8).copy()
    table = np.array([[buffer.ctypes.data, buffer.nbytes, 0]], np.int64)
    return buffer, call(lambda: agent.register_memory(table, "DRAM"), "register_memory (card)")


def address(host: str, port: int, agent_name: str, buffer: np.ndarray) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"nixl://{host}:{port}/{agent_name}?card={buffer.ctypes.data}:{buffer.nbytes}"


def fetch_card(call, agent, where: str, host: str, port: int, name: str, query: dict, deadline: float) -> bytes:
    """The card of agent `name` at `host`:`port`: its metadata through the listener,
    then one READ of the card region its address names."""
    try:
        at, nbytes = (int(x) for x in query["card"].split(":"))
    except (KeyError, ValueError):
        raise SpecError(f"fetch_peer({where[:200]!r}): a nixl address names its card as ?card=ADDRESS:BYTES "
                        f"(what publish() returned)") from None
    if not name or not 0 < nbytes <= MAX_CARD_BYTES or at <= 0:
        raise SpecError(f"fetch_peer({where[:200]!r}): no agent name, or a card of {nbytes:,} bytes at {at:#x}")
    call(lambda: agent.fetch_remote_metadata(name, host, port), "fetch_remote_metadata", peer=where)
    while not call(lambda: agent.check_remote_metadata(name), "check_remote_metadata", peer=where):
        if time.monotonic() > deadline:
            raise TransportTimeout(f"no NIXL metadata from agent {name!r} at {host}:{port}: is its listener up "
                                   f"(NixlBackend(listen_port={port}))?", peer=where)
        time.sleep(0.002)
    card = np.zeros(nbytes, np.uint8)
    local = call(lambda: agent.register_memory(np.array([[card.ctypes.data, nbytes, 0]], np.int64), "DRAM"),
                 "register_memory (card)", peer=where)
    handle = None
    try:
        descs = [call(lambda a=a: agent.get_xfer_descs(np.array([[a, nbytes, 0]], np.int64), "DRAM"),
                      "get_xfer_descs", peer=where) for a in (card.ctypes.data, at)]
        handle = call(lambda: agent.initialize_xfer("READ", descs[0], descs[1], name, b""), "initialize_xfer",
                      peer=where)
        state = call(lambda: agent.transfer(handle), "transfer", peer=where)
        while state != "DONE":
            if state == "ERR":
                raise TransportError(f"NIXL READ of the card ({nbytes:,} bytes at {at:#x}) failed: the peer's card "
                                     f"is not registered there (a stale address?)", peer=where)
            if time.monotonic() > deadline:
                raise TransportTimeout(f"the READ of the card at {at:#x} did not finish", peer=where)
            state = call(lambda: agent.check_xfer_state(handle), "check_xfer_state", peer=where)
    finally:
        if handle is not None:
            call(lambda: agent.release_xfer_handle(handle), "release_xfer_handle", peer=where)
        call(lambda: agent.deregister_memory(local), "deregister_memory (card)", peer=where)
    return card.tobytes()
