"""Local steps (bounce pack and unpack, a conv strategy's copies) run from step templates.

Lowering a request's pack and unpack rows on the host, then checking, binding and
uploading them, costs milliseconds per request (8 K - 262 K rows on the benchmark
plans) where the copies take a tenth of that. A `StepRoute` is built once per prepared
plan, side and rank: the step's `kvplan.lowering.CopyTemplate` (block-relative, the
scratch side indexed by span position), its bounds checked once, its columns uploaded
once on a GPU. Per request only block ids go in: one kernel launch on a GPU (the copy
template kernel), or the template expanded and memmoved on the host (the same route,
so the CPU suite runs it).

Bounds: page offsets grow with block ids, which `request_blocks` checks against
`num_blocks`, so every entry inside its region at the last block bounds them all;
scratch offsets grow with the request's spans, checked per request in O(entries).
"""

from __future__ import annotations

import numpy as np

from kvplan.errors import BoundsError
from kvplan.lowering import copy_template, expand, positional

from . import _gpucopy, _hostcopy
from ._memory import HOST, Memory


def available(plan) -> bool:
    """Can `plan`'s local steps run from templates? They need local steps and both
    engines' `num_blocks` (what bounds the page side)."""
    return bool(plan.pre_tables or plan.post_tables) and plan.src.num_blocks is not None and \
        plan.dst.num_blocks is not None


class StepRoute:
    """One side's local steps of one prepared plan and decode rank: "pre" on prefill
    rank `src_rank`, or "post" on the decode rank, in `memory` (this rank's own)."""

    def __init__(self, plan, dst_rank: int, step: str, src_rank: int | None, memory: Memory):
        self.plan, self.dst_rank, self.step, self.memory = plan, dst_rank, step, memory
        self.template = t = copy_template(plan, dst_rank, step=step, src_rank=src_rank,
                                          max_piece_bytes=_gpucopy.TEMPLATE_PIECE_BYTES)
        regions = plan.src_regions if step == "pre" else plan.dst_regions
        scratch = np.array([r.per_request for r in regions], bool)
        # a pre step's destination and a post step's source are scratch: index by position
        self.scratch_side = "dst" if step == "pre" else "src"
        page_side = "src" if step == "pre" else "dst"
        engine = plan.src if step == "pre" else plan.dst
        region = getattr(t, f"{page_side}_region")
        if len(t) and scratch[region].any():
            raise BoundsError(f"{step} step of decode rank {dst_rank} has a page-side row in a scratch region")
        # every entry's copy at the last block ends inside its region
        end = (engine.num_blocks - 1) * getattr(t, f"{page_side}_stride") + getattr(t, f"{page_side}_offset") + t.nbytes
        over = end > np.asarray(memory.sizes, np.int64)[region]
        if over.any():
            k = int(np.flatnonzero(over)[0])
            raise BoundsError(f"{step} step of decode rank {dst_rank}: entry {k} at block {engine.num_blocks - 1} "
                              f"ends at byte {int(end[k])} of region {int(region[k])}, which holds "
                              f"{int(memory.sizes[int(region[k])])} bytes")
        self._scratch_region = getattr(t, f"{self.scratch_side}_region")
        self._scratch_end = getattr(t, f"{self.scratch_side}_offset") + t.nbytes
        self._scratch_stride = getattr(t, f"{self.scratch_side}_stride")
        self._sizes = np.asarray(memory.sizes, np.int64)
        self._bases = np.asarray(memory.bases, np.uint64)
        self._src_base, self._dst_base = self._bases[t.src_region], self._bases[t.dst_region]
        self._device = None
        if memory.device != HOST:
            import cupy

            self._cp, self._gpu = cupy, _gpucopy
            with cupy.cuda.Device(memory.device):
                stream = cupy.cuda.get_current_stream()
                self._device = _gpucopy.upload_template(cupy, memory.device, t, self._src_base, self._dst_base,
                                                        stream)
                stream.synchronize()

    def run(self, blocks, *, first_position: int = 0) -> int:
        """Copy one request's step (its `request_blocks` for this plan and decode rank,
        or a staging ring's chunk of them, its staging from span `first_position`);
        returns the copies made. Finished on return."""
        t = self.template
        if not len(t):
            return 0
        spans = np.asarray(blocks.spans, np.int64)[t.group]
        need = (np.maximum(spans - 1, 0) + first_position) * self._scratch_stride + self._scratch_end
        short = need > self._sizes[self._scratch_region]
        if short.any():
            k = int(np.flatnonzero(short)[0])
            region = int(self._scratch_region[k])
            regions = self.plan.src_regions if self.step == "pre" else self.plan.dst_regions
            raise BoundsError(f"{self.step} step needs {int(need[k])} B of scratch region {region} "
                              f"({regions[region].name}) for this request of {int(spans[k])} spans; "
                              f"{int(self._sizes[region])} B are registered")
        if self._device is None:
            return self._run_host(positional(blocks, self.scratch_side, first_position=first_position))
        cp, device = self._cp, self.memory.device
        with cp.cuda.Device(device):
            stream = cp.cuda.get_current_stream()
            # the kernel indexes the staging side by span position itself (positional's rule)
            copies = self._gpu.launch_template(cp, device, self._device, t, blocks, stream, scratch=self.scratch_side,
                                               first_position=first_position)
            stream.synchronize()
        return copies

    def _run_host(self, indexed) -> int:
        rows = expand(self.template, indexed)
        _hostcopy.copy_ranges(self._bases[rows["src_region"]] + rows["src_offset"].astype(np.uint64),
                              self._bases[rows["dst_region"]] + rows["dst_offset"].astype(np.uint64), rows["nbytes"])
        return len(rows["nbytes"])
