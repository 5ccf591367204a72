"""Byte layout of a recurrent-state page: [conv state | SSM state | padding].

Conv state of a rank is `channels_local x rows` elements, rows = conv_kernel - 1 +
speculative tokens. "DS" stores it channel-major (each channel's taps contiguous, so
a sub-projection x, B or C is one range); "SD" stores it tap-major (a sub-projection
is `rows` strided chunks). Sub-projections follow each other in the channel order:

    DS  [x0 taps][x1 taps]...[B0 taps]...[C0 taps]...   then SSM heads, then padding
    SD  [tap0: x.. B.. C..][tap1: x.. B.. C..]...        then SSM heads, then padding

Nemotron-H at TP1: x 4096 ch, B 1024, C 1024, 3 rows, bf16 -> conv 36,864 B;
SSM 64 heads x 64 x 128 x fp32 -> 2,097,152 B.
"""

from __future__ import annotations

from .dtypes import dtype_bytes
from .errors import ShardingError, SpecError
from .geometry import Field, LayerGeometry


def _split(total: int, tp: int, rank: int, what: str) -> tuple[int, int]:
    if total % tp:
        raise ShardingError(f"{total} {what} cannot be split over TP {tp}: {total} % {tp} = {total % tp}")
    per = total // tp
    return rank * per, (rank + 1) * per


def state_parts(spec, tp: int, rank: int):
    """Conv sub-projections [(component, lo, hi)] in page order, and the SSM part
    (lo, hi, bytes per index) or None, as global index intervals held by `rank`.

    >>> from kvplan.state_specs import Mamba2Spec
    >>> state_parts(Mamba2Spec(num_heads=4, head_dim=2, n_groups=1, d_state=3, conv_kernel=4), 2, 1)
    ([('conv_x', 4, 8), ('conv_B', 0, 3), ('conv_C', 0, 3)], (2, 4, 24))
    """
    kind = spec.kind
    if kind == "mamba2":
        h_lo, h_hi = _split(spec.num_heads, tp, rank, "Mamba2 heads")
        if spec.num_heads % spec.n_groups:
            raise ShardingError(f"Mamba2 num_heads {spec.num_heads} is not a multiple of n_groups {spec.n_groups}")
        # a rank holds the B/C groups its heads belong to (replicated when n_groups < TP)
        per_group = spec.num_heads // spec.n_groups
        per_rank = h_hi - h_lo
        if per_rank % per_group and per_group % per_rank:
            raise ShardingError(
                f"Mamba2 with {spec.num_heads} heads in {spec.n_groups} groups over TP {tp}: a rank's "
                f"{per_rank} heads straddle groups of {per_group} heads, so ranks would hold unequal B/C"
            )
        g_lo, g_hi = h_lo // per_group, (h_hi - 1) // per_group + 1
        x = (h_lo * spec.head_dim, h_hi * spec.head_dim)
        b = (g_lo * spec.d_state, g_hi * spec.d_state)
        ssm = (h_lo, h_hi, spec.head_dim * spec.d_state * dtype_bytes(spec.ssm_dtype))
        return [("conv_x", *x), ("conv_B", *b), ("conv_C", *b)], ssm
    if kind == "mamba1":
        lo, hi = _split(spec.intermediate_size, tp, rank, "Mamba1 channels")
        return [("conv_x", lo, hi)], (lo, hi, spec.d_state * dtype_bytes(spec.ssm_dtype))
    if kind == "gdn":
        k_lo, k_hi = _split(spec.num_k_heads, tp, rank, "GDN key heads")
        v_lo, v_hi = _split(spec.num_v_heads, tp, rank, "GDN value heads")
        qk = (k_lo * spec.head_k_dim, k_hi * spec.head_k_dim)
        v = (v_lo * spec.head_v_dim, v_hi * spec.head_v_dim)
        ssm = (v_lo, v_hi, spec.head_v_dim * spec.head_k_dim * dtype_bytes(spec.ssm_dtype))
        return [("conv_Q", *qk), ("conv_K", *qk), ("conv_V", *v)], ssm
    if kind == "short_conv":
        return [("conv", *_split(spec.conv_dim, tp, rank, "short-conv channels"))], None
    raise SpecError(f"no state layout for layer kind {kind!r}")


def conv_rows(spec, num_speculative_tokens: int) -> int:
    """Taps kept per channel: conv_kernel - 1 plus one per speculative token."""
    return spec.conv_kernel - 1 + num_speculative_tokens


def state_natural_bytes(spec, tp: int, num_speculative_tokens: int) -> tuple[int, int]:
    """(conv bytes, SSM bytes) of one rank's state page, before padding."""
    parts, ssm = state_parts(spec, tp, 0)
    channels = sum(hi - lo for _, lo, hi in parts)
    conv = channels * conv_rows(spec, num_speculative_tokens) * dtype_bytes(spec.conv_dtype)
    return conv, 0 if ssm is None else (ssm[1] - ssm[0]) * ssm[2]


def state_geometry(spec, tp: int, tp_rank: int, conv_layout: str, num_speculative_tokens: int,
                   page_bytes: int | None) -> LayerGeometry:
    """Fields of a state layer on TP rank `tp_rank`; the page is padded to `page_bytes`.

    >>> from kvplan.state_specs import Mamba1Spec
    >>> g = state_geometry(Mamba1Spec(8, 2, 4, "float16", "float32"), 2, 0, "SD", 0, 64)
    >>> [(f.component, f.base_bytes, f.shard_stride_bytes, f.run_bytes, f.axes) for f in g.fields]
    [('conv_x', 0, 2, 2, ((3, 8),)), ('ssm', 24, 8, 8, ())]
    """
    parts, ssm = state_parts(spec, tp, tp_rank)
    rows = conv_rows(spec, num_speculative_tokens)
    e = dtype_bytes(spec.conv_dtype)
    channels = sum(hi - lo for _, lo, hi in parts)
    fields, before = [], 0
    for component, lo, hi in parts:
        # both layouts expose the tap axis, so a DS page and an SD page intersect element
        # by element; coalescing merges a DS channel's taps back into one range
        if conv_layout == "DS":
            fields.append(Field(component, 0, lo, hi, rows * e, e, before * rows * e, axes=((rows, e),)))
        else:
            fields.append(Field(component, 0, lo, hi, e, e, before * e, axes=((rows, channels * e),)))
        before += hi - lo
    conv_bytes = channels * rows * e
    natural = conv_bytes
    if ssm is not None:
        lo, hi, per = ssm
        fields.append(Field("ssm", 0, lo, hi, per, per, conv_bytes))
        natural += (hi - lo) * per
    if page_bytes is not None and page_bytes < natural:
        raise SpecError(f"state page of {page_bytes} B is smaller than the layer's {natural} B of state")
    return LayerGeometry(tuple(fields), (natural if page_bytes is None else page_bytes,), 1, 1)
