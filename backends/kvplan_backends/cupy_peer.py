"""`cupy`: GPU-to-GPU copies inside one process, one kernel launch per request.

The kernel runs on the destination's device and reads the sources over NVLink (peer
access enabled once per device pair). Without peer access it falls back to one
`cudaMemcpyPeerAsync` per coalesced row. Copies are enqueued on `stream` (default: the
destination device's current stream); with ``blocking=False`` `execute` returns once
enqueued and later work on that stream sees the bytes.

* `execute(transfer)`: binds and uploads every row of a lowered `Transfer` (O(rows)
  host work per request).
* `execute(prepared, src_blocks, dst_blocks)`: the first request of a `Prepared`
  uploads the plan's copy template (`kvplan.lowering.copy_template`, region bases
  resolved, bounds checked at every engine's last block); each request then uploads
  only its block ids and one kernel evaluates the template (one warp per copy). Plans
  with local steps, engines without `num_blocks` and ``peer_access=False`` lower
  per request instead.

Every request passes the gate first (`kvplan.lowering.check_transfer`; the template
is checked once against every engine's last block, block ids per request). Sources
are held by their live registration, so a closed source is refused. Integrity mode
digests ranges with one kernel launch (`_gpucopy.digest_ranges`, the formula of
`kvplan.lowering.range_digests`): the source's rows before the copy (``serve(...,
check=True)``, or here with ``check=True``), the destination's after it, on the copy's
stream.

Usage (needs two GPUs; `tests/backends/test_gpu.py` runs it)::

    decode = CupyPeerBackend()
    decode.register(buffers_on_gpu_1, rank=0)
    decode.add_peer(0, prefill_on_gpu_0.metadata())
    prepared = decode.prepare(plan, 0)
    decode.execute(prepared, [7, 8], [40, 41], request="r1")   # decode.route == "template"
    decode.execute(prepared, [7, 8], [40, 41], request="r2", check=True)   # + digests, both sides
"""

from __future__ import annotations

import numpy as np

from kvplan.lowering import (
    GroupRequest,
    RequestBlocks,
    Transfer,
    check_bounds,
    copy_template,
    expand,
    request_blocks,
    source_ranks,
)
from kvplan.transport import TransportError

from ._base import BackendBase
from ._prepared import block_relative


class CupyPeerBackend(BackendBase):
    name = "cupy"

    def __init__(self, *, stream=None, blocking: bool = True, peer_access: bool = True, timeout_s: float = 30.0):
        super().__init__(timeout_s=timeout_s)
        import cupy

        from . import _gpucopy

        self._cp, self._gpu = cupy, _gpucopy
        self.stream, self.blocking, self.peer_access = stream, blocking, peer_access
        self.last_launch = {"ranges": 0, "pieces": 0, "path": None}

    def _check_memory(self, memory) -> None:
        devices = {d for d, s in zip(memory.devices, memory.sizes) if s}
        if len(devices) != 1 or -1 in devices:
            raise TransportError(f"cupy backend needs every buffer on one GPU, got devices {sorted(devices)}")

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        self._in_process(rank, info)

    def _stream(self):
        return self._current()

    def _current(self):
        with self._cp.cuda.Device(self.memory.device):
            return self.stream or self._cp.cuda.get_current_stream()

    def _peer_access(self, ranks) -> bool:
        """Can kernels on this device read every one of these peers (enabled once)?"""
        device = self.memory.device
        return self.peer_access and all(self._gpu.enable_peer_access(self._cp, device, self.peers[r].device)
                                        for r in ranks)

    # -- a Transfer: bind, upload, one launch ------------------------------------------
    def _read(self, transfer, request: str) -> None:
        src, dst = self._bind_remote(transfer)
        self._launch(src, dst, transfer, self._peer_access(source_ranks(transfer).tolist()))

    def _copy_local(self, transfer) -> None:
        src, dst = self._bind_local(transfer)
        self._launch(src, dst, transfer, True)

    def _launch(self, src, dst, transfer, direct: bool) -> None:
        cp, device, stream = self._cp, self.memory.device, self._current()
        with cp.cuda.Device(device), stream:
            if direct:
                pieces = self._gpu.copy_ranges(cp, device, src, dst, transfer.nbytes, stream)
            else:
                for rank in transfer.source_ranks:
                    rows = transfer.src_rank == rank
                    self._gpu.memcpy_peer_ranges(cp, device, self.peers[rank].device, src[rows], dst[rows],
                                                 transfer.nbytes[rows], stream)
                pieces = len(transfer)
        self.last_launch = {"ranges": len(transfer), "pieces": int(pieces), "path": "kernel" if direct else "memcpyPeer"}
        self._finish(stream)

    def _finish(self, stream) -> None:
        if self.blocking:
            stream.synchronize()

    # -- a Prepared: the copy template, uploaded once ----------------------------------
    def _execute_prepared(self, prepared, src_blocks, dst_blocks, prefix: str, request: str, check=False) -> None:
        uploaded = self._fast_state(prepared)
        if uploaded is None:
            super()._execute_prepared(prepared, src_blocks, dst_blocks, prefix, request, check)
            return
        self.route = "template"
        template, columns = uploaded
        blocks = request_blocks(prepared.plan, prepared.dst_rank, src_blocks, dst_blocks, prefix=prefix)

        def move():
            stream = self._current()
            copies = self._gpu.launch_template(self._cp, self.memory.device, columns, template, blocks, stream)
            self.last_launch = {"ranges": copies, "pieces": copies, "path": "template"}
            self._finish(stream)

        self._fast_route(prepared, src_blocks, dst_blocks, prefix, request, check, move)

    def _build_fast(self, prepared):
        """(template, its device columns) of a block-relative plan whose sources this
        device can read; None otherwise (the request is then lowered)."""
        plan = prepared.plan
        if not block_relative(plan):
            return None
        ranks = list(plan.reads(prepared.dst_rank).source_ranks)
        self._require_peers(ranks)
        if not self._peer_access(ranks):
            return None
        template = copy_template(plan, prepared.dst_rank, max_piece_bytes=self._gpu.TEMPLATE_PIECE_BYTES)
        # block ids are checked against num_blocks per request, and an address grows with
        # its block id: every entry inside registered memory at the last blocks bounds them all
        last = _last_blocks(plan, template)
        check_bounds(last, {r: self.peers[r].sizes for r in ranks}, self.memory.sizes)
        # entries with offset 0 bind to their region bases, which the kernel adds itself
        zero = np.zeros(len(template), np.int64)
        entries = Transfer(dst_rank=prepared.dst_rank, src_rank=template.src_rank, src_region=template.src_region,
                           src_offset=zero, dst_region=template.dst_region, dst_offset=zero, nbytes=template.nbytes)
        src_base, dst_base = entries.bind({r: self.peers[r].bases for r in ranks}, self.memory.bases)
        return template, self._gpu.upload_template(self._cp, self.memory.device, template, src_base, dst_base,
                                                   self._current())


def _last_blocks(plan, template) -> Transfer:
    """Every template entry's copy at the last block of both engines: `expand` of a
    one-span request naming only those blocks.

    >>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan(EngineSpec(model=m, tp=2, num_blocks=4), EngineSpec(model=m, tp=4, num_blocks=6))
    >>> t = _last_blocks(p, copy_template(p, 3))   # a 32 KiB prefill page, 16 KiB decode page
    >>> t.src_offset.tolist(), t.dst_offset.tolist(), t.nbytes.tolist()   # block 3 + half a page, block 5
    ([114688], [81920], [16384])
    """
    groups = tuple(GroupRequest(blocks_per_span=(ns, nd), src_ids=[plan.src.num_blocks - 1] * ns,
                                dst_ids=[plan.dst.num_blocks - 1] * nd, partial=False, decode_blocks=nd)
                   for ns, nd in template.blocks_per_span)
    blocks = RequestBlocks(dst_rank=template.dst_rank, groups=groups,
                           first_kept=np.zeros(plan.dst.model.num_layers, np.int64), windowed=False)
    return Transfer(dst_rank=template.dst_rank, **expand(template, blocks))


__all__ = ["CupyPeerBackend"]
