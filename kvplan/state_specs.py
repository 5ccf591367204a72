"""Layer specs of recurrent state: Mamba1, Mamba2, gated delta net, short conv.

These layers keep one state per request (per logical block of their group), not one
entry per token: a conv state of `conv_kernel - 1 (+ speculative tokens)` taps per
channel and (except short conv) an SSM / recurrent state. Channels and heads are
TP-sharded; Mamba2 B/C groups are replicated when ``n_groups < TP`` (a rank holds the
group its heads belong to).

Conv channels per sub-projection (global, before TP):

    Mamba2  x = num_heads*head_dim | B = n_groups*d_state | C = n_groups*d_state
    Mamba1  x = intermediate_size
    GDN     Q = num_k_heads*head_k_dim | K = num_k_heads*head_k_dim | V = num_v_heads*head_v_dim
    conv    conv_dim
"""

from __future__ import annotations

import attrs

from ._validators import positive
from .dtypes import canonical_dtype, dtype_bytes


@attrs.frozen
class Mamba2Spec:
    """Mamba2 mixer state (Nemotron-H, Granite-4.0-H, Falcon-H1, Bamba, Zamba2).

    >>> s = Mamba2Spec(num_heads=64, head_dim=64, n_groups=8, d_state=128, conv_kernel=4)
    >>> s.conv_channels, s.ssm_bytes_per_head
    (6144, 32768)
    """

    num_heads: int = attrs.field(validator=positive)
    head_dim: int = attrs.field(validator=positive)
    n_groups: int = attrs.field(validator=positive)
    d_state: int = attrs.field(validator=positive)
    conv_kernel: int = attrs.field(validator=positive)
    conv_dtype: str = attrs.field(default="bfloat16", converter=canonical_dtype)
    ssm_dtype: str = attrs.field(default="float32", converter=canonical_dtype)

    kind = "mamba2"

    @property
    def conv_channels(self) -> int:
        return self.num_heads * self.head_dim + 2 * self.n_groups * self.d_state

    @property
    def ssm_bytes_per_head(self) -> int:
        return self.head_dim * self.d_state * dtype_bytes(self.ssm_dtype)


@attrs.frozen
class Mamba1Spec:
    """Mamba1 mixer state (Jamba): conv over x only; SSM state (channels, d_state).

    >>> Mamba1Spec(intermediate_size=8192, d_state=16, conv_kernel=4).conv_channels
    8192
    """

    intermediate_size: int = attrs.field(validator=positive)
    d_state: int = attrs.field(validator=positive)
    conv_kernel: int = attrs.field(validator=positive)
    conv_dtype: str = attrs.field(default="bfloat16", converter=canonical_dtype)
    ssm_dtype: str = attrs.field(default="float32", converter=canonical_dtype)

    kind = "mamba1"

    @property
    def conv_channels(self) -> int:
        return self.intermediate_size


@attrs.frozen
class GatedDeltaNetSpec:
    """Gated delta net (Qwen3-Next, Qwen3.5): conv over Q|K|V, recurrent (v heads, dv, dk).

    >>> GatedDeltaNetSpec(16, 32, 128, 128, 4).conv_channels
    8192
    """

    num_k_heads: int = attrs.field(validator=positive)
    num_v_heads: int = attrs.field(validator=positive)
    head_k_dim: int = attrs.field(validator=positive)
    head_v_dim: int = attrs.field(validator=positive)
    conv_kernel: int = attrs.field(validator=positive)
    conv_dtype: str = attrs.field(default="bfloat16", converter=canonical_dtype)
    ssm_dtype: str = attrs.field(default="float32", converter=canonical_dtype)

    kind = "gdn"

    @property
    def conv_channels(self) -> int:
        return 2 * self.num_k_heads * self.head_k_dim + self.num_v_heads * self.head_v_dim


@attrs.frozen
class ShortConvSpec:
    """Short convolution (LFM2): conv state only.

    >>> ShortConvSpec(conv_dim=2048, conv_kernel=3).conv_channels
    2048
    """

    conv_dim: int = attrs.field(validator=positive)
    conv_kernel: int = attrs.field(validator=positive)
    conv_dtype: str = attrs.field(default="bfloat16", converter=canonical_dtype)

    kind = "short_conv"

    @property
    def conv_channels(self) -> int:
        return self.conv_dim


STATE_SPECS = (Mamba2Spec, Mamba1Spec, GatedDeltaNetSpec, ShortConvSpec)
