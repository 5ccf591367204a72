"""Laws of conv strategies (kvplan.planning.conv.apply_strategy): for "staged" and
"permuted", running the pre steps, the reads and the post steps on byte arrays (scratch
areas of exactly the documented sizes, bounds checked) leaves the destination page
byte for byte as the direct rows do; "direct" is the identity."""

from __future__ import annotations

import numpy as np
import pytest
from _laws import copy_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.layout import engine_memory, state_natural_bytes
from kvplan.planning import SCRATCH, STRATEGIES, StrategyRows, TemplateRows, apply_strategy
from kvplan.planning.intersect import layer_rows
from kvplan.spec import COMPONENT_CODE, CONV_COMPONENTS
from kvplan.testing.strategies import hybrid_engine_pairs

UNWRITTEN, STALE = -7, -5  # destination bytes nobody wrote; scratch bytes nobody filled

_CONV_CODES = {COMPONENT_CODE[c] for c in CONV_COMPONENTS}


def _run(t: TemplateRows, source, target) -> None:
    """Copy every row: `source(rank, slot)` / `target(rank, slot)` give the byte arrays."""
    assert (t.src_block == 0).all() and (t.dst_block == 0).all()  # one state per block
    for i in range(len(t)):
        p = int(t.src_rank[i])
        copy_bytes(source(p, int(t.src_slot[i])), int(t.src_offset[i]), target(p, int(t.dst_slot[i])),
                   int(t.dst_offset[i]), int(t.nbytes[i]))


def simulate(rows: StrategyRows, src_pages: dict[int, np.ndarray], dst_page_bytes: int) -> np.ndarray:
    """The destination page after pre steps, reads and post steps; each side's scratch is
    an array of exactly the size `rows` states, filled with STALE."""
    pages = {p: page.copy() for p, page in src_pages.items()}
    src_scratch = {p: np.full(sum(rows.src_scratch_bytes), STALE, np.int64) for p in pages}
    dst = np.full(dst_page_bytes, UNWRITTEN, np.int64)
    dst_scratch = np.full(sum(rows.dst_scratch_bytes), STALE, np.int64)

    def on_source(p, slot):
        return src_scratch[p] if slot == SCRATCH else pages[p]

    def on_destination(_, slot):
        return dst_scratch if slot == SCRATCH else dst

    _run(rows.pre, on_source, on_source)
    _run(rows.reads, on_source, on_destination)
    _run(rows.post, on_destination, on_destination)
    return dst


@st.composite
def state_templates(draw):
    """(direct template, src pages, dst page bytes, src conv bytes, dst conv bytes, dst
    TP rank, dst tp) of a state layer of a generated hybrid engine pair."""
    src, dst = draw(hybrid_engine_pairs(max_layers=3), label="engines")
    layer = draw(st.sampled_from([i for i, s in enumerate(dst.model.layers) if not s.holds_tokens]), label="layer")
    rank = draw(st.integers(0, dst.tp - 1), label="dst_tp_rank")
    src_mem, dst_mem = engine_memory(src), engine_memory(dst)
    template = layer_rows(src_mem, dst_mem, layer, rank)
    spec = dst.model.layers[layer]
    pages = {p: p * 1_000_000 + np.arange(src_mem.layer_layout(layer, p).page_bytes[0], dtype=np.int64)
             for p in range(src.tp)}
    return (template, pages, dst_mem.layer_layout(layer, rank).page_bytes[0],
            state_natural_bytes(spec, src.tp, src.num_speculative_tokens)[0],
            state_natural_bytes(spec, dst.tp, dst.num_speculative_tokens)[0], rank, dst.tp)


def _conv_sources(template: TemplateRows) -> list[int]:
    return sorted({int(p) for p, c in zip(template.src_rank, template.component) if int(c) in _CONV_CODES})


@settings(max_examples=100)
@given(state_templates(), st.sampled_from(["staged", "permuted"]))
def test_pre_reads_post_reproduce_the_direct_byte_map(case, strategy):
    """Composing pre steps, reads and post steps writes exactly the bytes the direct rows
    write, with the same values, and no stale scratch byte reaches the destination."""
    template, pages, dst_bytes, src_conv, dst_conv, rank, dst_tp = case
    direct = simulate(apply_strategy("direct", template, src_conv, dst_conv, rank, dst_tp), pages, dst_bytes)
    rows = apply_strategy(strategy, template, src_conv, dst_conv, rank, dst_tp)
    assert np.array_equal(simulate(rows, pages, dst_bytes), direct)


@settings(max_examples=100)
@given(state_templates())
def test_scratch_sizes_and_descriptor_counts_are_as_documented(case):
    """direct: the template itself, no steps, no scratch. staged: one conv read per source
    into a destination scratch of sources x src conv bytes, one post step per conv row.
    permuted: one conv read per source; source scratch of dst_tp chunks of dst conv bytes (none
    without conv rows);
    destination scratch of sources x dst conv bytes only when post steps unpack."""
    template, _, _, src_conv, dst_conv, rank, dst_tp = case
    sources = _conv_sources(template)
    is_conv = np.isin(template.component, sorted(_CONV_CODES))
    others = template.select(~is_conv)

    direct = apply_strategy("direct", template, src_conv, dst_conv, rank, dst_tp)
    assert direct.reads == template and len(direct.pre) == len(direct.post) == 0
    assert sum(direct.src_scratch_bytes) == sum(direct.dst_scratch_bytes) == 0

    staged = apply_strategy("staged", template, src_conv, dst_conv, rank, dst_tp)
    conv_reads = staged.reads.select(staged.reads.component == COMPONENT_CODE["conv"])
    assert sorted(conv_reads.src_rank.tolist()) == sources and (conv_reads.nbytes == src_conv).all()
    assert staged.reads.select(staged.reads.component != COMPONENT_CODE["conv"]) == others
    assert len(staged.pre) == 0 and len(staged.post) == int(is_conv.sum())
    assert (sum(staged.src_scratch_bytes), sum(staged.dst_scratch_bytes)) == (0, len(sources) * src_conv)

    permuted = apply_strategy("permuted", template, src_conv, dst_conv, rank, dst_tp)
    conv_reads = permuted.reads.select(permuted.reads.component == COMPONENT_CODE["conv"])
    assert sorted(conv_reads.src_rank.tolist()) == sources
    assert permuted.reads.select(permuted.reads.component != COMPONENT_CODE["conv"]) == others
    assert len(permuted.pre) == int(is_conv.sum())
    assert sum(permuted.src_scratch_bytes) == (dst_tp * dst_conv if sources else 0)  # 0 when unused
    assert sum(permuted.dst_scratch_bytes) == (len(sources) * dst_conv if len(permuted.post) else 0)


def _template(entries) -> TemplateRows:
    cols = np.array(entries, np.int64).reshape(-1, len(TemplateRows.column_names())).T
    return TemplateRows.from_columns(dict(zip(TemplateRows.column_names(), cols, strict=True)))


X, B, SSM = COMPONENT_CODE["conv_x"], COMPONENT_CODE["conv_B"], COMPONENT_CODE["ssm"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_degenerate_templates(strategy):
    """No rows at all, and a conv run already contiguous at the destination (permuted
    reads it straight into place: no post step, no destination scratch)."""
    empty = apply_strategy(strategy, _template([]), 8, 8, 0, 1)
    assert len(empty.reads) == len(empty.pre) == len(empty.post) == 0 and sum(empty.dst_scratch_bytes) == 0
    # source 0 holds x at 0..4 and B at 10..14; the destination wants them back to back
    t = _template([(0, X, 0, 0, 0, 0, 0, 0, 4), (0, B, 0, 0, 0, 0, 10, 4, 4)])
    pages = {0: np.arange(16, dtype=np.int64)}
    rows = apply_strategy(strategy, t, 16, 8, 0, 1)
    assert np.array_equal(simulate(rows, pages, 8), np.r_[0:4, 10:14])
    if strategy == "permuted":
        assert len(rows.post) == 0 and sum(rows.dst_scratch_bytes) == 0 and len(rows.reads) == 1


def test_permuted_without_conv_rows_needs_no_source_scratch():
    """An SSM-only template has nothing to permute: no steps and no scratch."""
    rows = apply_strategy("permuted", _template([(0, SSM, 0, 0, 0, 0, 0, 0, 8)]), 16, 8, 0, 2)
    assert len(rows.pre) == len(rows.post) == 0
    assert sum(rows.src_scratch_bytes) == sum(rows.dst_scratch_bytes) == 0
