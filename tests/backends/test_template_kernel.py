"""The copy-template kernel's indexing, emulated on the CPU: what `pack_request` hands
the kernel, decoded exactly as the CUDA source decodes it, must name the copies that
`kvplan.lowering.expand` (the reference formula) names. The GPU run checks the bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.lowering import copy_template, expand, request_blocks
from kvplan.testing.strategies import planned_requests
from kvplan_backends._gpucopy import TEMPLATE_PIECE_BYTES, group_entries, pack_request


def emulate(template, packed, groups: int, layers: int, total: int) -> list[tuple]:
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
    reference = expand(template, blocks)
    want = sorted(zip(*(reference[c].tolist() for c in
                        ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")), strict=True))
    assert emulate(template, packed, groups, len(blocks.first_kept), copies) == want
