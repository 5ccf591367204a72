"""Meeting peers on other hosts: addresses, peer cards and the fingerprint checks.

A rank `publish`es a card (its `metadata()` header: kind, rank, registered memory, plus
the engine it registered for and that engine's fingerprint) through the transport's
own listener and hands out an address; a rank of the other engine `fetch_peer`s the
card from that address. How the bytes travel is the transport's business (`nixl`:
NIXL's metadata listener, then one NIXL READ of the card; `ucx`: a ucxx listener and a
stream); this module is what both share: the address form, reading a card and
refusing one that cannot be right, and checking a plan against the engines peers
published.

>>> parse_address("ucx://10.0.0.5:41231", "ucx")
('10.0.0.5', 41231, '', {})
>>> parse_address("nixl://[::1]:5601/agent-7?card=140000:512", "nixl")
('::1', 5601, 'agent-7', {'card': '140000:512'})
>>> parse_address("ucx://10.0.0.5:41231", "nixl")
Traceback (most recent call last):
...
kvplan.errors.SpecError: fetch_peer('ucx://10.0.0.5:41231'): a nixl backend fetches 'nixl://HOST:PORT/...' addresses (what a nixl backend's publish() returned)
"""

from __future__ import annotations

import urllib.parse

from kvplan.errors import KvplanError, PlanMismatchError, SpecError
from kvplan.layout import engine_memory
from kvplan.spec import EngineSpec
from kvplan.spec.fingerprint import fingerprint
from kvplan.spec.serial import engine_from_json, engine_to_json
from kvplan.transport import PeerCard, TransportError

from ._memory import unpack_metadata

MAX_CARD_BYTES = 64 << 20  # a card larger than this is not one (an engine JSON is kilobytes)


def parse_address(address, scheme: str) -> tuple[str, int, str, dict]:
    """(host, port, path, query) of an address `publish` returned; anything else is a
    `SpecError` naming it."""
    if not isinstance(address, str):
        raise SpecError(f"fetch_peer() takes the address string a peer's publish() returned, got "
                        f"{type(address).__name__}")
    wrong = SpecError(f"fetch_peer({address[:200]!r}): a {scheme} backend fetches '{scheme}://HOST:PORT/...' "
                      f"addresses (what a {scheme} backend's publish() returned)")
    try:
        parts = urllib.parse.urlsplit(address)
        port = parts.port
    except ValueError:
        raise wrong from None
    if parts.scheme != scheme or not parts.hostname or port is None:
        raise wrong
    query = dict(urllib.parse.parse_qsl(parts.query))
    return parts.hostname, port, parts.path.lstrip("/"), query


def check_host(host) -> str:
    """The host a card is published under: what peers connect to (an IP or a name)."""
    if not isinstance(host, str) or not host or len(host) > 255 or any(c in host for c in "/?#@ "):
        raise SpecError(f"publish(host={host!r}): the host is the name or IP address peers connect to, "
                        f"e.g. '10.0.0.5' (or '127.0.0.1' for peers on this host)"[:300])
    return host


def engine_fields(engine) -> dict:
    """The card fields naming the engine a rank registered for (none without one)."""
    if engine is None:
        return {}
    if not isinstance(engine, EngineSpec):
        raise SpecError(f"publish(engine): the EngineSpec this rank registered memory for, or None; got "
                        f"{type(engine).__name__}")
    return {"engine": engine_to_json(engine), "fingerprint": fingerprint(engine)}


def read_card(address: str, kind: str, data: bytes) -> PeerCard:
    """The `PeerCard` in `data` fetched from `address`; refuses a card of another
    transport, one whose engine does not give the fingerprint it carries (the two ends
    run different byte rules: different kvplan versions), and one whose registered
    memory is smaller than its engine needs."""
    info, memory, _ = unpack_metadata(kind, data)
    engine, published = None, info.get("fingerprint")
    rank = info.get("rank")
    if info.get("engine") is not None:
        try:
            engine = engine_from_json(info["engine"])
        except KvplanError as error:
            raise PlanMismatchError(f"the peer at {address} published an engine this kvplan cannot read: "
                                    f"{error}"[:400]) from None
        here = fingerprint(engine)
        if here != published:
            raise PlanMismatchError(f"the peer at {address} publishes engine fingerprint {published!r}, but its "
                                    f"engine gives {here!r} here: the two ends lay bytes out by different rules "
                                    f"(run the same kvplan version on both)")
        if rank is not None:
            _check_memory(address, engine, int(rank), memory.sizes)
    return PeerCard(address=address, rank=rank, engine=engine, fingerprint=published, metadata=bytes(data))


def _check_memory(address: str, engine: EngineSpec, rank: int, sizes) -> None:
    if rank >= engine.world_size:
        raise PlanMismatchError(f"the peer at {address} is rank {rank}, but its engine has "
                                f"{engine.world_size} ranks (tp {engine.tp} x pp {engine.pp})")
    if engine.num_blocks is None:
        return
    stage = rank // engine.tp
    for index, region in enumerate(engine_memory(engine).regions):
        need = region.block_bytes * engine.num_blocks if region.stage == stage else 0
        have = int(sizes[index]) if index < len(sizes) else 0
        if have < need:
            raise PlanMismatchError(f"the peer at {address} (rank {rank}) registered {have:,} bytes for region "
                                    f"{index} ({region.name}); its engine needs {need:,} "
                                    f"({engine.num_blocks:,} blocks of {region.block_bytes:,} bytes)")


def check_plan(plan, own: str | None, peers: dict) -> None:
    """Refuse a plan whose engines are not the ones this rank and its peers published:
    `own` this rank's fingerprint (None: not published), `peers` {rank: fingerprint or
    None}. A rank of one engine pairs with ranks of the other."""
    sides = {"prefill": _side(plan.src), "decode": _side(plan.dst)}
    if None in sides.values():
        return  # a store side: stores publish no engine
    mine = [name for name, fp in sides.items() if fp == own]
    if own is not None and not mine:
        raise PlanMismatchError(f"this rank published engine {own}, but the plan pairs prefill engine "
                                f"{sides['prefill']} with decode engine {sides['decode']}")
    # one side's rank pairs with the other side's ranks (both, when the engines are equal)
    allowed = {sides[name] for name in sides if name not in mine} if len(mine) == 1 else set(sides.values())
    for rank, fp in sorted(peers.items()):
        if fp is not None and fp not in allowed:
            raise PlanMismatchError(f"peer rank {rank} published engine {fp}, but the plan pairs prefill engine "
                                    f"{sides['prefill']} with decode engine {sides['decode']}"
                                    + (f" and this rank is its {mine[0]} side" if len(mine) == 1 else ""))


def _side(engine) -> str | None:
    return fingerprint(engine) if isinstance(engine, EngineSpec) else None


def card_length(data: bytes, address: str) -> int:
    """The card length an 8-byte little-endian prefix announces, bounded."""
    if len(data) != 8:
        raise TransportError(f"the peer at {address} sent {len(data)} bytes where a card length goes")
    n = int.from_bytes(bytes(data), "little")
    if not 0 < n <= MAX_CARD_BYTES:
        raise TransportError(f"the peer at {address} announced a card of {n:,} bytes (at most "
                             f"{MAX_CARD_BYTES:,}): it is not a kvplan peer")
    return n
