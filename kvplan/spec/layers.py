"""Layer specs: what one layer stores, model-wide (all heads, before any TP split).

Every layer spec speaks one small protocol, which is all later stages ask of it:

* `kind`: a display name ("attention", "mla", "mamba2", ...);
* `holds_tokens`: True for token layers (a KV entry per token, paired by tokens), False
  for state layers (one recurrent state per block, paired block for block);
* `tp_axes()`: the `Axis` values the layer splits over tensor parallelism, so an
  engine can refuse a TP size that cannot shard it;
* state layers add `parts()`: their sub-tensors in page order (conv sub-projections,
  then the SSM state), each following one TP-sharded axis, and `conv_kernel`,
  `conv_dtype`.

Conv channels per sub-projection (global, before TP):

    Mamba2  x = num_heads*head_dim | B = n_groups*d_state | C = n_groups*d_state
    Mamba1  x = intermediate_size
    GDN     Q = num_k_heads*head_k_dim | K = num_k_heads*head_k_dim | V = num_v_heads*head_v_dim
    conv    conv_dim

Mamba2's B and C follow its groups, which replicate when ``n_groups < TP`` (a rank
holds the group its heads belong to); every other axis must split evenly.
"""

from __future__ import annotations

import math

import attrs

from ..errors import SpecError
from ._validators import boolean, int_field, optional_positive
from .dtypes import canonical_dtype, dtype_bytes
from .limits import MAX_CONV_CHANNELS, MAX_CONV_KERNEL, MAX_HEAD_DIM, MAX_HEADS, MAX_WINDOW_TOKENS
from .placement import Axis, Replicate, Shard


@attrs.frozen
class AttentionSpec:
    """One attention layer's KV cache.

    >>> AttentionSpec(num_kv_heads=8, head_dim=128).bytes_per_token
    4096

    MLA stores one latent vector per token (``mla=True``, ``num_kv_heads=1``,
    ``head_dim`` = latent width, e.g. 576 for DeepSeek-V3) that every rank holds whole.
    A sliding-window layer (``sliding_window=W`` tokens) needs only the last blocks of
    a request (`kept_blocks`).
    """

    num_kv_heads: int = int_field(MAX_HEADS)
    head_dim: int = int_field(MAX_HEAD_DIM)
    head_dim_v: int | None = int_field(MAX_HEAD_DIM, optional_positive, default=None, kw_only=True)
    dtype: str = attrs.field(default="bfloat16", converter=canonical_dtype, kw_only=True)
    mla: bool = attrs.field(default=False, validator=boolean, kw_only=True)
    sliding_window: int | None = int_field(MAX_WINDOW_TOKENS, optional_positive, default=None, kw_only=True)

    holds_tokens = True

    def __attrs_post_init__(self):
        if self.mla and (self.num_kv_heads != 1 or self.head_dim_v not in (None, 0)):
            raise SpecError(
                f"MLA layers store one latent per token: num_kv_heads must be 1 and head_dim_v unset, "
                f"got num_kv_heads={self.num_kv_heads}, head_dim_v={self.head_dim_v}"
            )

    @property
    def kind(self) -> str:
        return "mla" if self.mla else "attention"

    @property
    def v_dim(self) -> int:
        """Value head dim (0 for MLA, which stores no separate V)."""
        if self.mla:
            return 0
        return self.head_dim if self.head_dim_v is None else self.head_dim_v

    @property
    def elem_bytes(self) -> int:
        return dtype_bytes(self.dtype)

    @property
    def bytes_per_token(self) -> int:
        """K and V (or the latent) of all heads for one token."""
        return self.num_kv_heads * (self.head_dim + self.v_dim) * self.elem_bytes

    @property
    def heads(self) -> Axis:
        """The axis TP splits: KV heads (replicated past their count), or the latent."""
        if self.mla:
            return Axis(what="MLA latent", extent=1, placement=Replicate())
        return Axis(what="KV heads", extent=self.num_kv_heads, placement=Shard())

    def tp_axes(self) -> tuple[Axis, ...]:
        return (self.heads,)

    def kept_blocks(self, block_tokens: int) -> int | None:
        """Blocks at the end of a request a sliding window still reads (vLLM's
        get_exchange_clipped_blocks: ``ceil(W / block) + 1``); None without a window.

        >>> AttentionSpec(16, 128, sliding_window=1024).kept_blocks(16)
        65
        """
        if not self.sliding_window:
            return None
        return math.ceil(self.sliding_window / block_tokens) + 1


@attrs.frozen(kw_only=True)
class StatePart:
    """One sub-tensor of a state page, following a TP-sharded `axis`.

    A conv part holds `width` conv channels per index of its axis (a Mamba2 head holds
    head_dim x channels); the "ssm" part holds `width` bytes per index.

    >>> spec = Mamba2Spec(num_heads=8, head_dim=4, n_groups=2, d_state=16, conv_kernel=4)
    >>> [(p.component, p.axis.what, p.axis.extent, p.width) for p in spec.parts()]
    [('conv_x', 'Mamba2 heads', 8, 4), ('conv_B', 'Mamba2 groups', 2, 16), ('conv_C', 'Mamba2 groups', 2, 16), ('ssm', 'Mamba2 heads', 8, 256)]
    """

    component: str
    axis: Axis
    width: int


def _conv_dtype():
    """The conv-state dtype field: the model dtype engines default to."""
    return attrs.field(default="bfloat16", converter=canonical_dtype)


def _ssm_dtype():
    """The SSM / recurrent-state dtype field: float32 unless the engine says otherwise."""
    return attrs.field(default="float32", converter=canonical_dtype)


def _sharded(what: str, extent: int) -> Axis:
    """State heads or channels split over TP; past their count each is replicated on
    TP / extent ranks (TP a multiple of it), as attention replicates KV heads."""
    return Axis(what=what, extent=extent, placement=Shard())


def _heads():
    return int_field(MAX_HEADS)


def _dim():
    return int_field(MAX_HEAD_DIM)


def _channels():
    return int_field(MAX_CONV_CHANNELS)


def _conv_kernel():
    return int_field(MAX_CONV_KERNEL)


class _StateLayer:
    """The protocol shared by state layers (mixed into the frozen specs below)."""

    __slots__ = ()  # keeps the attrs subclasses slotted
    holds_tokens = False

    def __attrs_post_init__(self):
        # each field is bounded on its own; a sub-projection's channels are a product
        for part in self.parts():
            if part.component != "ssm":
                MAX_CONV_CHANNELS.check(part.axis.extent * part.width,
                                        f"{type(self).__name__} {part.component} channels")

    def parts(self) -> tuple[StatePart, ...]:
        raise NotImplementedError

    def tp_axes(self) -> tuple[Axis, ...]:
        return tuple(dict.fromkeys(part.axis for part in self.parts()))

    @property
    def conv_channels(self) -> int:
        return sum(part.axis.extent * part.width for part in self.parts() if part.component != "ssm")


@attrs.frozen(kw_only=True)
class Mamba2Spec(_StateLayer):
    """Mamba2 mixer state (Nemotron-H, Granite-4.0-H, Falcon-H1, Bamba, Zamba2).

    >>> s = Mamba2Spec(num_heads=64, head_dim=64, n_groups=8, d_state=128, conv_kernel=4)
    >>> s.conv_channels, s.ssm_bytes_per_head
    (6144, 32768)
    """

    num_heads: int = _heads()
    head_dim: int = _dim()
    n_groups: int = _heads()
    d_state: int = _dim()
    conv_kernel: int = _conv_kernel()
    conv_dtype: str = _conv_dtype()
    ssm_dtype: str = _ssm_dtype()

    kind = "mamba2"

    def __attrs_post_init__(self):
        if self.num_heads % self.n_groups:
            raise SpecError(f"Mamba2 num_heads {self.num_heads} is not a multiple of n_groups {self.n_groups}")
        super().__attrs_post_init__()

    @property
    def ssm_bytes_per_head(self) -> int:
        return self.head_dim * self.d_state * dtype_bytes(self.ssm_dtype)

    def parts(self) -> tuple[StatePart, ...]:
        heads = _sharded("Mamba2 heads", self.num_heads)
        # a rank holds the B/C groups its heads belong to: replicated when n_groups < TP
        groups = Axis(what="Mamba2 groups", extent=self.n_groups, placement=Shard())
        return (StatePart(component="conv_x", axis=heads, width=self.head_dim),
                StatePart(component="conv_B", axis=groups, width=self.d_state),
                StatePart(component="conv_C", axis=groups, width=self.d_state),
                StatePart(component="ssm", axis=heads, width=self.ssm_bytes_per_head))


@attrs.frozen(kw_only=True)
class Mamba1Spec(_StateLayer):
    """Mamba1 mixer state (Jamba): conv over x only; SSM state (channels, d_state).

    >>> Mamba1Spec(intermediate_size=8192, d_state=16, conv_kernel=4).conv_channels
    8192
    """

    intermediate_size: int = _channels()
    d_state: int = _dim()
    conv_kernel: int = _conv_kernel()
    conv_dtype: str = _conv_dtype()
    ssm_dtype: str = _ssm_dtype()

    kind = "mamba1"

    def parts(self) -> tuple[StatePart, ...]:
        channels = _sharded("Mamba1 channels", self.intermediate_size)
        return (StatePart(component="conv_x", axis=channels, width=1),
                StatePart(component="ssm", axis=channels, width=self.d_state * dtype_bytes(self.ssm_dtype)))


@attrs.frozen(kw_only=True)
class GatedDeltaNetSpec(_StateLayer):
    """Gated delta net (Qwen3-Next, Qwen3.5): conv over Q|K|V, recurrent (v heads, dv, dk).

    >>> GatedDeltaNetSpec(num_k_heads=16, num_v_heads=32, head_k_dim=128, head_v_dim=128,
    ...                   conv_kernel=4).conv_channels
    8192
    """

    num_k_heads: int = _heads()
    num_v_heads: int = _heads()
    head_k_dim: int = _dim()
    head_v_dim: int = _dim()
    conv_kernel: int = _conv_kernel()
    conv_dtype: str = _conv_dtype()
    ssm_dtype: str = _ssm_dtype()

    kind = "gdn"

    def parts(self) -> tuple[StatePart, ...]:
        keys = _sharded("GDN key heads", self.num_k_heads)
        values = _sharded("GDN value heads", self.num_v_heads)
        return (StatePart(component="conv_Q", axis=keys, width=self.head_k_dim),
                StatePart(component="conv_K", axis=keys, width=self.head_k_dim),
                StatePart(component="conv_V", axis=values, width=self.head_v_dim),
                StatePart(component="ssm", axis=values,
                          width=self.head_v_dim * self.head_k_dim * dtype_bytes(self.ssm_dtype)))


@attrs.frozen(kw_only=True)
class ShortConvSpec(_StateLayer):
    """Short convolution (LFM2): conv state only.

    >>> ShortConvSpec(conv_dim=2048, conv_kernel=3).conv_channels
    2048
    """

    conv_dim: int = _channels()
    conv_kernel: int = _conv_kernel()
    conv_dtype: str = _conv_dtype()

    kind = "short_conv"

    def parts(self) -> tuple[StatePart, ...]:
        return (StatePart(component="conv", axis=_sharded("short-conv channels", self.conv_dim), width=1),)


STATE_SPECS = (Mamba2Spec, Mamba1Spec, GatedDeltaNetSpec, ShortConvSpec)
LAYER_SPECS = (AttentionSpec, *STATE_SPECS)


def conv_rows(spec, num_speculative_tokens: int) -> int:
    """Taps a state layer keeps per conv channel: conv_kernel - 1 plus one per
    speculative token.

    >>> conv_rows(ShortConvSpec(conv_dim=8, conv_kernel=4), 2)
    5
    """
    return spec.conv_kernel - 1 + num_speculative_tokens
