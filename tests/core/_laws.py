"""Helpers shared by the law files of tests/core: generated placements and engines,
identity codes of the reference cell model taken apart, and byte-level simulation of
rows (so a law compares byte maps, never expected values copied from the code)."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import strategies as st

from kvplan.spec import Axis, Replicate, Shard
from kvplan.testing.strategies import engine_pairs, hybrid_engine_pairs

def quotes(message: str, *values) -> bool:
    """Does an error message quote every value (numbers as whole numbers)?"""
    return all(re.search(rf"(?<![\d-]){re.escape(str(v))}(?!\d)", message) for v in values)


# -- placements ------------------------------------------------------------------------------


@st.composite
def placed_axes(draw, *, max_extent: int = 24, max_tp: int = 24):
    """(Axis, tp) that the axis's placement can shard: Shard() splitting or replicating,
    Shard(replicate_excess=False) splitting, Replicate() anything."""
    kind = draw(st.sampled_from(["shard", "strict", "replicate"]), label="placement")
    if kind == "replicate":
        extent, tp = draw(st.integers(1, max_extent)), draw(st.integers(1, max_tp))
        placement = Replicate()
    else:
        per, times = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        if kind == "strict" or draw(st.booleans(), label="split"):
            extent, tp = per * times, times     # tp divides extent
        else:
            extent, tp = per, per * times       # extent divides tp: replicated excess
        placement = Shard() if kind == "shard" else Shard(replicate_excess=False)
    return Axis(what="things", extent=extent, placement=placement), tp


def holders_of(axis: Axis, tp: int) -> list[tuple[int, int, int]]:
    """[(rank, lo, hi)] of every TP rank, in rank order (what the planner builds)."""
    return [(p, *axis.interval(tp, p)) for p in range(tp)]


# -- engines ---------------------------------------------------------------------------------

def any_engine_pair():
    """(prefill, decode) of an attention model or of a hybrid (pooled or not) model."""
    return st.one_of(engine_pairs(max_layers=2), hybrid_engine_pairs(max_layers=3))


# -- identity codes of `kvplan.check.cells` (component | index | token | sub) -----------------

_SUB, _TOKEN, _INDEX = 16, 22, 20


def decode(codes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(component, index, token, sub) fields of cell codes (checked in test_units)."""
    codes = np.asarray(codes, np.int64)
    return (codes >> (_SUB + _TOKEN + _INDEX), (codes >> (_SUB + _TOKEN)) & ((1 << _INDEX) - 1),
            (codes >> _SUB) & ((1 << _TOKEN) - 1), codes & ((1 << _SUB) - 1))


# -- byte-level simulation ------------------------------------------------------------------------

def byte_spans(offset, nbytes) -> np.ndarray:
    """Every byte of rows ``[offset[i], offset[i] + nbytes[i])``, row by row."""
    offset, nbytes = np.asarray(offset, np.int64), np.asarray(nbytes, np.int64)
    if not len(nbytes):
        return np.zeros(0, np.int64)
    first = np.repeat(np.cumsum(nbytes) - nbytes, nbytes)
    return np.repeat(offset, nbytes) + np.arange(int(nbytes.sum()), dtype=np.int64) - first


def byte_map(keys, src_offset, dst_offset, nbytes) -> list[tuple]:
    """The (keys..., src byte, dst byte) triples rows copy, in row order: equal byte maps
    mean equal copies however the rows are cut or merged."""
    src, dst = byte_spans(src_offset, nbytes), byte_spans(dst_offset, nbytes)
    repeated = [np.repeat(np.asarray(k, np.int64), np.asarray(nbytes, np.int64)) for k in keys]
    return list(zip(*(r.tolist() for r in repeated), src.tolist(), dst.tolist(), strict=True))


def copy_bytes(src: np.ndarray, src_offset: int, dst: np.ndarray, dst_offset: int, nbytes: int) -> None:
    """dst[dst_offset:+n] = src[src_offset:+n], failing (not truncating) out of bounds."""
    assert 0 <= src_offset and src_offset + nbytes <= len(src), (src_offset, nbytes, len(src))
    assert 0 <= dst_offset and dst_offset + nbytes <= len(dst), (dst_offset, nbytes, len(dst))
    dst[dst_offset:dst_offset + nbytes] = src[src_offset:src_offset + nbytes]
