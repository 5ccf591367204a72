"""Engines on different hosts: ranks meet over TCP through the transports' own listeners.

* Property (nixl and ucx, both ends in this process, TCP on 127.0.0.1): for random
  engines, a card fetched from a rank's `publish` address names that rank, its engine
  and fingerprint; paired through cards, a plan of the published engines prepares, a
  plan of other engines is refused.
* Two processes (a spawned prefill host, this process the decode host): the sides meet
  only over TCP (`_pairing` with ``tcp=True``: addresses over the pipe, cards over the
  network), the decode side plans from the fetched engines, and every request lands as
  it does through the host backend; pull, push (nixl) and a conv strategy's pre steps.
* Every wrong input or broken peer ends in a `KvplanError` naming it.
"""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import (AttentionSpec, EngineSpec, Mamba2Spec, ModelSpec, PlanMismatchError, SpecError, TransportError,
                    check_compatible, engine_memory, fingerprint, plan, verify)
from kvplan.testing.strategies import engine_pairs, hybrid_engine_pairs
from kvplan.transport import TransportTimeout, load_backend
from kvplan_backends import _exchange
from kvplan_backends._memory import Memory, pack_metadata

from _fabric import run, same_each
from _need import need
from _pairing import allocate, free_port, listening

M = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=16),) * 2)
SRC, DST = EngineSpec(model=M, tp=2, num_blocks=8, kv_layout="NHD"), EngineSpec(model=M, tp=4, num_blocks=8)
HOST = "127.0.0.1"


def _backend(kind: str, engine, rank: int, **options):
    backend = load_backend(kind, **listening(kind, {"timeout_s": 10, **options}))
    backend.register(allocate(engine, rank, fill=False), rank=rank)
    return backend


@settings(max_examples=6, deadline=None)
@given(pair=st.one_of(engine_pairs(max_layers=2), hybrid_engine_pairs(max_layers=3)), kind=st.sampled_from(
    ["nixl", "ucx"]), data=st.data())
def test_cards_fetched_over_tcp_carry_rank_engine_and_fingerprint(pair, kind, data):
    need(kind)
    src, dst = (attrs.evolve(e, num_blocks=4) for e in pair)
    src_rank = data.draw(st.integers(0, src.world_size - 1), label="src_rank")
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    prefill, decode = _backend(kind, src, src_rank), _backend(kind, dst, dst_rank)
    try:
        addresses = prefill.publish(src, host=HOST), decode.publish(dst, host=HOST)
        cards = decode.fetch_peer(addresses[0]), prefill.fetch_peer(addresses[1])
        for card, engine, rank, address in zip(cards, (src, dst), (src_rank, dst_rank), addresses, strict=True):
            assert (card.rank, card.engine, card.fingerprint, card.address) == (rank, engine, fingerprint(engine),
                                                                                address)
        decode.add_peer(src_rank, cards[0].metadata)
        prefill.add_peer(dst_rank, cards[1].metadata)
        p = plan(cards[0].engine, dst)  # planned from what the peer published
        verify(p)
        decode.prepare(p, dst_rank)
        prefill.prepare(plan(src, cards[1].engine), dst_rank)
        # a plan of an engine nobody published (more blocks than registered), on either side
        with pytest.raises(PlanMismatchError, match="published engine"):
            decode.prepare(plan(src, attrs.evolve(dst, num_blocks=5)), dst_rank)
        with pytest.raises(PlanMismatchError, match="published engine"):
            decode.prepare(plan(attrs.evolve(src, num_blocks=5), dst), dst_rank)
    finally:
        decode.close()
        prefill.close()


H = ModelSpec(name="h", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),
                                Mamba2Spec(num_heads=8, head_dim=2, n_groups=2, d_state=4, conv_kernel=4)))
CASES = {
    "attention": (plan(SRC, DST), [([5, 1, 2], [0, 7, 3]), ([0, 4], [6, 5])]),
    # a conv TP change with the permuted strategy: pre steps on the prefill host
    "hybrid-permuted": (plan(EngineSpec(model=H, tp=2, num_blocks=8), EngineSpec(model=H, tp=4, num_blocks=8),
                             conv_strategy="permuted"), [([[2, 3], [5]], [[1, 0], [4]]), ([[6], [1]], [[7], [2]])]),
}


@pytest.mark.parametrize("case, kind, options", [
    ("attention", "nixl", {}), ("attention", "ucx", {}), ("attention", "nixl", {"push": True}),
    ("hybrid-permuted", "nixl", {}), ("hybrid-permuted", "ucx", {}),
])
def test_a_prefill_host_met_over_tcp_delivers_the_host_result(case, kind, options):
    need(kind)
    p, reqs = CASES[case]
    got = run(kind, p, 1, reqs, apart=True, tcp=True, tag=f"tcp-{kind}", options=options or None,
              source_options=options or None)
    assert same_each(got.prepared, run("host", p, 1, reqs).prepared)
    assert any(b.any() for b in got.prepared[-1] if b is not None)


def test_the_serving_sequence_plans_from_the_fetched_engine():
    """register -> publish -> fetch peer -> check -> plan -> prepare, as docs/deployments.md shows."""
    need("ucx")
    prefill, decode = _backend("ucx", SRC, 1), _backend("ucx", DST, 2)
    try:
        card = decode.fetch_peer(prefill.publish(SRC, host=HOST))
        assert check_compatible(card.engine, DST) == ()
        decode.add_peer(card.rank, card.metadata)
        assert decode.prepare(plan(card.engine, DST), 2).dst_rank == 2
    finally:
        decode.close()
        prefill.close()


# -- what is refused -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
def test_publish_and_fetch_refuse_bad_input(kind):
    need(kind)
    fresh = load_backend(kind)
    with pytest.raises(TransportError, match="register"):
        fresh.publish(SRC, host=HOST)
    fresh.close()
    backend = load_backend(kind) if kind == "host" else _backend(kind, SRC, 0)
    if kind == "host":
        backend.register(allocate(SRC, 0, fill=False), rank=0)
    try:
        for host in ("", "a b", 7, None):
            with pytest.raises(SpecError, match="host"):
                backend.publish(SRC, host=host)
        with pytest.raises(SpecError, match="EngineSpec"):
            backend.publish("llama", host=HOST)
        for address in (None, 42, "", "tcp://1.2.3.4:5", f"{kind}://nowhere", f"{kind}://h:99999"):
            with pytest.raises(SpecError, match="fetch_peer"):
                backend.fetch_peer(address)
        if kind == "host":
            with pytest.raises(TransportError, match="nixl, ucx"):
                backend.publish(SRC, host=HOST)
            return
        address = backend.publish(SRC, host=HOST)
        with pytest.raises(TransportError, match="already published"):
            backend.publish(SRC, host=HOST)
        assert address.startswith(f"{kind}://{HOST}:")
    finally:
        backend.close()


def test_listener_ports_are_checked():
    need("nixl")
    need("ucx")
    for kind, port in (("nixl", 0), ("nixl", 70000), ("nixl", True), ("ucx", -1), ("ucx", "5601")):
        with pytest.raises(SpecError, match="listen_port"):
            load_backend(kind, listen_port=port)


def test_nixl_needs_its_listener_for_both_publish_and_fetch():
    need("nixl")
    backend = load_backend("nixl")
    backend.register(allocate(SRC, 0, fill=False), rank=0)
    try:
        for call in (lambda: backend.publish(SRC, host=HOST), lambda: backend.fetch_peer("nixl://h:5/a?card=1:2")):
            with pytest.raises(TransportError, match="listen_port"):
                call()
    finally:
        backend.close()


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
def test_nobody_listening_ends_in_a_transport_error(kind):
    need(kind)
    backend = _backend(kind, DST, 0, timeout_s=0.5)
    try:
        address = f"nixl://{HOST}:{free_port()}/nobody?card=4096:100" if kind == "nixl" else \
            f"ucx://{HOST}:{free_port()}"
        with pytest.raises(TransportError, match="nobody|listen|card") as error:
            backend.fetch_peer(address)
        assert kind == "ucx" or isinstance(error.value, TransportTimeout)
    finally:
        backend.close()


def test_a_nixl_card_address_that_names_no_card_is_refused():
    need("nixl")
    prefill, decode = _backend("nixl", SRC, 0), _backend("nixl", DST, 0)
    try:
        address = prefill.publish(SRC, host=HOST)
        base, _, card = address.partition("?card=")
        at, nbytes = (int(x) for x in card.split(":"))
        with pytest.raises(TransportError, match="NIXL|card"):
            decode.fetch_peer(f"{base}?card={at + (1 << 40)}:{nbytes}")
        for bad in (base, f"{base}?card=x:1", f"{base}?card={at}:0"):
            with pytest.raises(SpecError, match="card"):
                decode.fetch_peer(bad)
        assert decode.fetch_peer(address).rank == 0  # the agent is still usable
        other = _backend("nixl", DST, 1)
        with pytest.raises(TransportError, match="fetch_peer"):  # a card fetched by another agent
            other.add_peer(0, decode.fetch_peer(address).metadata)
        other.close()
    finally:
        decode.close()
        prefill.close()


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
def test_a_closed_rank_serves_no_card(kind):
    need(kind)
    prefill, decode = _backend(kind, SRC, 0, timeout_s=0.5), _backend(kind, DST, 0, timeout_s=0.5)
    try:
        address = prefill.publish(SRC, host=HOST)
        prefill.close()
        assert prefill.release_errors == []
        with pytest.raises(TransportError):
            decode.fetch_peer(address)
    finally:
        decode.close()


def _card(spec, rank: int, sizes, **change) -> bytes:
    memory = Memory(bases=tuple(range(1, len(sizes) + 1)), sizes=tuple(sizes), devices=(-1,) * len(sizes))
    fields = {**_exchange.engine_fields(spec), **change}
    return pack_metadata("ucx", memory, rank=rank, **fields)


def test_cards_that_cannot_be_right_are_refused():
    need_bytes = [r.block_bytes * 8 for r in engine_memory(SRC).regions]
    card = _exchange.read_card("ucx://h:1", "ucx", _card(SRC, 1, need_bytes))
    assert (card.rank, card.engine) == (1, SRC)
    with pytest.raises(PlanMismatchError, match="different rules"):
        _exchange.read_card("ucx://h:1", "ucx", _card(SRC, 1, need_bytes, fingerprint="0" * 16))
    with pytest.raises(PlanMismatchError, match="cannot read"):
        _exchange.read_card("ucx://h:1", "ucx", _card(SRC, 1, need_bytes, engine=json.dumps({"schema": "x"})))
    with pytest.raises(PlanMismatchError, match="registered 10 bytes for region 0"):
        _exchange.read_card("ucx://h:1", "ucx", _card(SRC, 1, [10, *need_bytes[1:]]))
    with pytest.raises(PlanMismatchError, match="rank 5"):
        _exchange.read_card("ucx://h:1", "ucx", _card(SRC, 5, need_bytes))
    with pytest.raises(TransportError, match="for backend 'ucx'"):
        _exchange.read_card("nixl://h:1/a?card=1:2", "nixl", _card(SRC, 1, need_bytes))
    assert _exchange.read_card("ucx://h:1", "ucx", _card(None, 0, [1])).engine is None


def test_card_lengths_are_bounded():
    assert _exchange.card_length((512).to_bytes(8, "little"), "ucx://h:1") == 512
    for data in (b"", (0).to_bytes(8, "little"), (1 << 40).to_bytes(8, "little"), b"123"):
        with pytest.raises(TransportError, match="card"):
            _exchange.card_length(data, "ucx://h:1")


def test_an_unpublished_peer_is_not_checked_against_plans():
    """Ranks paired by metadata() alone (no engine published) prepare any plan, as before."""
    prefill, decode = load_backend("host"), load_backend("host")
    prefill.register(allocate(SRC, 0), rank=0)
    decode.register(out := allocate(DST, 0, fill=False), rank=0)
    decode.add_peer(0, prefill.metadata())
    decode.prepare(plan(SRC, DST), 0)
    decode.close()
    prefill.close()
    assert not any(b.any() for b in out)
