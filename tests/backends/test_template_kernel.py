"""The copy-template kernel's indexing, emulated on the CPU: what `pack_request` hands
the kernel, decoded exactly as the CUDA source decodes it, must name the copies that
`kvplan.lowering.expand` (the reference formula) names, and for a bounce plan's pack
and unpack templates, with the staging side indexed by span position in the kernel,
the copies `expand_step` names. The GPU run checks the bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import plan
from kvplan.lowering import copy_template, expand, expand_step, request_blocks
from kvplan.testing.strategies import engine_pairs, group_requests, hybrid_engine_pairs, planned_requests, requests
from kvplan_backends._gpucopy import SCRATCH_SIDES, TEMPLATE_PIECE_BYTES, group_entries, pack_request


def emulate(template, packed, groups: int, layers: int, total: int, scratch: int = 0,
            first_position: int = 0) -> list[tuple]:
    """copy_template() of _gpucopy's CUDA source, one copy index q at a time."""
    first_kept = packed[groups * 8:groups * 8 + layers]
    ids = packed[groups * 8 + layers:]
    rows = []
    for q in range(total):
        g = 0
        while g + 1 < groups and q >= packed[(g + 1) * 8 + 7]:
            g += 1
        m = packed[g * 8:g * 8 + 8]
        e, j = m[0] + (q - m[7]) // m[2], (q - m[7]) % m[2]
        di = j * m[4] + template.dst_block[e]
        s_id, d_id = ids[m[5] + j * m[3] + template.src_block[e]], ids[m[6] + di]
        if s_id < 0 or d_id < 0 or di < first_kept[template.layer[e]]:
            continue
        if scratch == 1:
            s_id = (j * m[3] + template.src_block[e]) // m[3] + first_position
        elif scratch == 2:
            d_id = di // m[4] + first_position
        rows.append((int(template.src_rank[e]), int(template.src_region[e]),
                     int(s_id * template.src_stride[e] + template.src_offset[e]), int(template.dst_region[e]),
                     int(d_id * template.dst_stride[e] + template.dst_offset[e]), int(template.nbytes[e])))
    return sorted(rows)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_kernel_indexing_names_the_reference_copies(data):
    p, dst_rank, src_blocks, dst_blocks = data.draw(planned_requests(num_blocks=24), label="request")
    piece = data.draw(st.sampled_from([TEMPLATE_PIECE_BYTES, 3, 64]), label="piece")
    template = copy_template(p, dst_rank, max_piece_bytes=piece)
    blocks = request_blocks(p, dst_rank, src_blocks, dst_blocks)
    packed, groups, copies = pack_request(template, blocks, *group_entries(template))
    assert emulate(template, packed, groups, len(blocks.first_kept), copies) == _rows(expand(template, blocks))


COLUMNS = ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")


def _rows(cols) -> list[tuple]:
    return sorted(zip(*(cols[c].tolist() for c in COLUMNS), strict=True))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_kernel_indexes_staging_by_span_position_like_expand_step(data):
    """Pack and unpack templates of bounce plans, dense and hybrid: the kernel computes
    the staging side's positions from the ids it is given, from any ring slot's first
    position."""
    hybrid = data.draw(st.booleans(), label="hybrid")
    src, dst = data.draw(hybrid_engine_pairs() if hybrid else engine_pairs(), label="engines")
    p = plan(src, dst, transfer_strategy="bounce")
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    src_blocks, dst_blocks = data.draw((group_requests if hybrid else requests)(src, dst, num_blocks=24),
                                       label="request")
    blocks = request_blocks(p, dst_rank, src_blocks, dst_blocks)
    step = data.draw(st.sampled_from(["pre", "post"]), label="step")
    src_rank = data.draw(st.integers(0, src.world_size - 1), label="src_rank") if step == "pre" else None
    first = data.draw(st.integers(0, 5), label="first_position")
    template = copy_template(p, dst_rank, step=step, src_rank=src_rank,
                             max_piece_bytes=data.draw(st.sampled_from([TEMPLATE_PIECE_BYTES, 3]), label="piece"))
    packed, groups, copies = pack_request(template, blocks, *group_entries(template))
    scratch = SCRATCH_SIDES["dst" if step == "pre" else "src"]
    got = emulate(template, packed, groups, len(blocks.first_kept), copies, scratch, first)
    assert got == _rows(expand_step(template, blocks, step, first_position=first))
