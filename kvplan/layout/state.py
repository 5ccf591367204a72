"""Recurrent-state pages: [conv state | SSM state | padding], one page per block.

The conv state of a rank is `channels x rows` elements (rows = conv_kernel - 1 +
speculative tokens), its sub-projections (x, B, C or Q, K, V) one after another in
channel order. "DS" stores it channel-major (a channel's taps contiguous, so a
sub-projection is one range), "SD" tap-major (a sub-projection is `rows` strided
chunks):

    DS  [x0 taps][x1 taps]...[B0 taps]...[C0 taps]...   then SSM heads, then padding
    SD  [tap0: x.. B.. C..][tap1: x.. B.. C..]...        then SSM heads, then padding

Nemotron-H at TP1: x 4096 ch, B 1024, C 1024, 3 rows, bf16 -> conv 36,864 B;
SSM 64 heads x 64 x 128 x fp32 -> 2,097,152 B.
"""

from __future__ import annotations

from ..errors import SpecError
from ..spec.dtypes import dtype_bytes
from ..spec.layers import conv_rows
from .affine import Layout
from .component import ComponentLayout, LayerLayout


def state_parts(spec, tp: int, rank: int):
    """Conv sub-projections [(component, lo, hi)] in page order as global channel
    intervals held by `rank`, and the SSM part (lo, hi, bytes per index) or None.

    >>> from kvplan.spec.layers import Mamba2Spec
    >>> state_parts(Mamba2Spec(num_heads=4, head_dim=2, n_groups=1, d_state=3, conv_kernel=4), 2, 1)
    ([('conv_x', 4, 8), ('conv_B', 0, 3), ('conv_C', 0, 3)], (2, 4, 24))
    """
    conv, ssm = [], None
    for part in spec.parts():
        lo, hi = part.axis.interval(tp, rank)
        if part.component == "ssm":
            ssm = (lo, hi, part.width)
        else:
            conv.append((part.component, lo * part.width, hi * part.width))
    return conv, ssm


def state_natural_bytes(spec, tp: int, num_speculative_tokens: int) -> tuple[int, int]:
    """(conv bytes, SSM bytes) of one rank's state page, before padding.

    >>> from kvplan.spec.layers import Mamba2Spec
    >>> state_natural_bytes(Mamba2Spec(num_heads=64, head_dim=64, n_groups=8, d_state=128, conv_kernel=4), 1, 0)
    (36864, 2097152)
    """
    parts, ssm = state_parts(spec, tp, 0)
    channels = sum(hi - lo for _, lo, hi in parts)
    conv = channels * conv_rows(spec, num_speculative_tokens) * dtype_bytes(spec.conv_dtype)
    return conv, 0 if ssm is None else (ssm[1] - ssm[0]) * ssm[2]


def state_layout(spec, tp: int, tp_rank: int, conv_layout: str, num_speculative_tokens: int,
                 page_bytes: int | None) -> LayerLayout:
    """The layout of a state layer on TP rank `tp_rank`; the page is padded to `page_bytes`.

    >>> from kvplan.spec.layers import Mamba1Spec
    >>> lay = state_layout(Mamba1Spec(intermediate_size=8, d_state=2, conv_kernel=4, conv_dtype="float16"),
    ...                    2, 0, "SD", 0, 64)
    >>> [(c.component, c.held, str(c.layout), c.cell_bytes) for c in lay.components]
    [('conv_x', (0, 4), '(4,3):(2,8)', 2), ('ssm', (0, 4), '(4):(8)+24', 8)]
    """
    parts, ssm = state_parts(spec, tp, tp_rank)
    rows = conv_rows(spec, num_speculative_tokens)
    e = dtype_bytes(spec.conv_dtype)
    channels = sum(hi - lo for _, lo, hi in parts)
    components, before = [], 0
    for component, lo, hi in parts:
        # both layouts expose the tap axis, so a DS page and an SD page intersect element
        # by element; coalescing merges a DS channel's taps back into one range
        if conv_layout == "DS":
            layout = Layout(shape=(hi - lo, rows), stride=(rows * e, e), offset=before * rows * e)
        else:
            layout = Layout(shape=(hi - lo, rows), stride=(e, channels * e), offset=before * e)
        components.append(ComponentLayout(component=component, slot=0, held=(lo, hi), layout=layout, cell_bytes=e,
                                          has_tokens=False))
        before += hi - lo
    conv_bytes = channels * rows * e
    natural = conv_bytes
    if ssm is not None:
        lo, hi, per = ssm
        components.append(ComponentLayout(component="ssm", slot=0, held=(lo, hi), cell_bytes=per, has_tokens=False,
                                          layout=Layout(shape=(hi - lo,), stride=(per,), offset=conv_bytes)))
        natural += (hi - lo) * per
    if page_bytes is not None and page_bytes < natural:
        raise SpecError(f"state page of {page_bytes} B is smaller than the layer's {natural} B of state")
    return LayerLayout(components=tuple(components), page_bytes=(natural if page_bytes is None else page_bytes,),
                       kernel_tokens=1, kernel_pages=1)
