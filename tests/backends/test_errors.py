"""Transport failures raise kvplan errors naming the peer and request, and leak nothing."""

from __future__ import annotations

import numpy as np
import pytest

from kvplan import AttentionSpec, BoundsError, EngineSpec, KvplanError, ModelSpec, Transfer, plan
from kvplan.transport import load_backend
from kvplan.transport import BackendNotFound, TransportError, TransportTimeout

from _need import need


def _pair(kind, src_bytes=4096, dst_bytes=4096, **options):
    src, dst = load_backend(kind, **options), load_backend(kind, **options)
    src.register([np.arange(src_bytes, dtype=np.uint8)])
    dst.register([np.zeros(dst_bytes, np.uint8)])
    dst.add_peer(1, src.metadata())
    src.add_peer(0, dst.metadata())
    return src, dst


def test_unknown_backend_lists_the_installed_ones():
    with pytest.raises(BackendNotFound, match=r"'rdma-by-hand'.*cupy, host, nixl, ucx"):
        load_backend("rdma-by-hand")


def test_missing_library_names_the_extra(monkeypatch):
    import kvplan.transport as backend

    class Broken:
        def load(self):
            raise ImportError("No module named 'ucxx'")

    monkeypatch.setattr(backend, "known_backends", lambda: {"ucx": Broken()})
    with pytest.raises(BackendNotFound, match=r"pip install 'ucxx-cu13==0.52.\*'") as info:
        load_backend("ucx")
    assert isinstance(info.value, KvplanError)


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
def test_rows_outside_registered_memory_are_refused_before_any_copy(kind):
    need(kind)
    src, dst = _pair(kind)
    try:
        with pytest.raises(BoundsError, match=r"reads \[4000, 4200\) of source rank 1 region 0, which holds 4096"):
            dst.execute(Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[4000], dst_region=[0], dst_offset=[0], nbytes=[200]), request="r-oob")
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
def test_unknown_peer_is_named(kind):
    need(kind)
    src, dst = _pair(kind)
    try:
        with pytest.raises(TransportError, match=r"rank\(s\) \[3\]"):
            dst.execute(Transfer(dst_rank=0, src_rank=[3], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0], nbytes=[8]), request="r-peer")
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("kinds", [("nixl", "ucx"), ("ucx", "host")])
def test_metadata_of_another_backend_is_rejected(kinds):
    for kind in kinds:
        need(kind)
    a, b = load_backend(kinds[0]), load_backend(kinds[1])
    try:
        a.register([np.zeros(8, np.uint8)])
        with pytest.raises(TransportError, match=f"for backend '{kinds[0]}', this backend is '{kinds[1]}'"):
            b.add_peer(0, a.metadata())
    finally:
        a.close()
        b.close()


def test_ucx_receive_without_sender_times_out_naming_peer_and_request():
    need("ucx")
    src, dst = _pair("ucx", timeout_s=0.3)
    try:
        with pytest.raises(TransportTimeout, match=r"peer rank 1, request 'req-lost'"):
            dst.execute(Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0], nbytes=[64]), request="req-lost")
    finally:
        src.close()
        dst.close()


def test_nixl_timeout_names_peer_and_request_and_releases_handles():
    need("nixl")
    size = 64 << 20
    src, dst = _pair("nixl", size, size, timeout_s=0.0)
    rows = 4096
    t = Transfer(dst_rank=0, src_rank=[1] * rows, src_region=[0] * rows, src_offset=np.arange(rows) * (size // rows), dst_region=[0] * rows,
                 dst_offset=np.arange(rows)[::-1] * (size // rows), nbytes=[size // rows] * rows)
    try:
        try:
            dst.execute(t, request="req-slow")
        except TransportTimeout as error:
            assert "request 'req-slow'" in str(error) and "rank 1" in str(error)
        assert not dst.agent._leaked_xfer_handles
        dst.timeout_s = 30.0
        dst.execute(t, request="req-again")  # the agent is still usable
    finally:
        src.close()
        dst.close()


def test_nixl_blocks_without_prepare_are_refused():
    need("nixl")
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=2, head_dim=4),))
    p = plan(EngineSpec(model=m, num_blocks=4), EngineSpec(model=m, num_blocks=4))
    backend = load_backend("nixl")
    try:
        with pytest.raises(TransportError, match="prepare"):
            backend.execute_blocks(p, [0], [1], request="r-unprepared")
    finally:
        backend.close()
