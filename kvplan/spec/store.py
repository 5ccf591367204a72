"""`StoreSpec`: a canonical, TP-independent layout for KV stores and engine migration.

A KV store (LMCache, Mooncake Store, a tier of Dynamo's KVBM) or a decode-to-decode
migration must hold a request's state in a layout that does not depend on the TP of
whoever wrote it. A `StoreSpec` is that layout: the model's cache as one rank would
hold it (TP 1, one pipeline stage), so

* per layer and block, every KV head once, in head order (HND pages, K then V): a TP
  rank's heads are one contiguous range of each page; MLA latents and replicated KV
  heads appear once;
* Mamba / GDN / short-conv state once per state block, conv channels in the model's
  order with x, B and C (or Q, K, V) each contiguous (DS), SSM state after;
* every layer's blocks in a region of their own, so an object of the store is one block
  of one layer: `block_tokens` tokens of attention KV, or one request's state.

`plan(engine, store)` and `plan(store, engine)` plan like any engine pair (a store is an
`EngineSpec` underneath, `StoreSpec.engine`), for any TP, PP and layout of the engine, and
verify alike; written by one engine and read by another, a request lands as the direct
engine-to-engine plan would put it (a property test checks it byte for byte).

>>> from kvplan.spec import AttentionSpec, ModelSpec
>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 2)
>>> store = StoreSpec(model=m, block_tokens=256)
>>> store.engine.tp, store.engine.kv_layout, store.engine.block_tokens
(1, 'HND', 256)
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ..errors import PlanError, SpecError
from ._validators import int_field, non_negative, optional_positive
from .engine import EngineSpec
from .groups import LayerGroup
from .limits import MAX_BLOCK_TOKENS, MAX_NUM_BLOCKS, MAX_SPECULATIVE_TOKENS
from .model import ModelSpec


def _model(instance, attribute, value) -> None:
    if not isinstance(value, ModelSpec):
        raise SpecError(f"StoreSpec.model must be a ModelSpec, got {type(value).__name__}")


@attrs.frozen(kw_only=True)
class StoreSpec:
    """A store's layout of `model` (module docstring): objects of `block_tokens` tokens
    per layer; `groups` as an engine's (None: one group of token layers, one of state
    layers); `num_speculative_tokens` as the engines' (it sizes conv state);
    `num_blocks` the objects per layer, when known."""

    model: ModelSpec = attrs.field(validator=_model)
    block_tokens: int = int_field(MAX_BLOCK_TOKENS, default=256)
    groups: tuple | None = None
    num_speculative_tokens: int = int_field(MAX_SPECULATIVE_TOKENS, non_negative, default=0)
    num_blocks: int | None = int_field(MAX_NUM_BLOCKS, optional_positive, default=None)

    @property
    def engine(self) -> EngineSpec:
        """The store as an engine: TP 1, PP 1, HND packed attention pages, DS conv state,
        its own region per layer (never pooled)."""
        return EngineSpec(model=self.model, tp=1, pp=1, block_tokens=self.block_tokens, kv_layout="HND",
                          kv_storage="packed", conv_layout="DS", groups=self.groups,
                          num_speculative_tokens=self.num_speculative_tokens, num_blocks=self.num_blocks)

    @classmethod
    def like(cls, engine, *, block_tokens: int | None = None, num_blocks: int | None = None) -> StoreSpec:
        """The store for `engine`'s model: its layer groups (with the store's block size)
        and speculative rows, `block_tokens` (default: the engine's) per object.

        >>> from kvplan.spec import AttentionSpec, ModelSpec
        >>> e = EngineSpec(model=ModelSpec(name="m", layers=(AttentionSpec(8, 128),)), tp=4, kv_layout="NHD")
        >>> StoreSpec.like(e, block_tokens=64).engine.tp
        1
        """
        if not isinstance(engine, EngineSpec):
            raise SpecError(f"StoreSpec.like takes an EngineSpec, got {type(engine).__name__}")
        groups = None if engine.groups is None else tuple(LayerGroup(layers=g.layers) for g in engine.groups)
        return cls(model=engine.model, block_tokens=engine.block_tokens if block_tokens is None else block_tokens,
                   groups=groups, num_speculative_tokens=engine.num_speculative_tokens, num_blocks=num_blocks)


def check_window_reads(store: StoreSpec, engine: EngineSpec) -> None:
    """Refuse `engine` reading `store` where a sliding window needs tokens the store
    does not keep: writing into a store keeps, like any decode engine, only the blocks a
    layer's window reads at the store's block size; a reader with other block sizes may
    need earlier tokens for some request lengths (checked for every length until the
    pattern repeats).

    >>> from kvplan.spec import AttentionSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(1, 8, sliding_window=8),))
    >>> check_window_reads(StoreSpec(model=m, block_tokens=16), EngineSpec(model=m, block_tokens=16))
    >>> check_window_reads(StoreSpec(model=m, block_tokens=4), EngineSpec(model=m, block_tokens=16))
    Traceback (most recent call last):
    ...
    kvplan.errors.PlanError: layer 0 (sliding window 8): a 13-token request read with 16-token blocks needs tokens from 0 on, which a store of 4-token blocks no longer keeps (it keeps the window's blocks at its own block size); use store blocks of 16 tokens
    """
    store_engine = store.engine
    for layer, spec in enumerate(store.model.layers):
        if not getattr(spec, "sliding_window", None):
            continue
        group = store_engine.group_of(layer)
        bs, bb = store_engine.group_block_tokens(group)[0], engine.group_block_tokens(group)[0]
        ks, kb = spec.kept_blocks(bs), spec.kept_blocks(bb)
        # starts repeat with period lcm(bs, bb) once neither is clipped at token 0
        tokens = np.arange(1, math.lcm(bs, bb) + ks * bs + kb * bb + 1, dtype=np.int64)
        have = np.maximum((-(-tokens // bs) - ks) * bs, 0)
        need = np.maximum((-(-tokens // bb) - kb) * bb, 0)
        short = np.flatnonzero(have > need)
        if len(short):
            t = int(tokens[short[0]])
            raise PlanError(f"layer {layer} (sliding window {spec.sliding_window}): a {t}-token request read "
                            f"with {bb}-token blocks needs tokens from {int(need[short[0]])} on, which a store of "
                            f"{bs}-token blocks no longer keeps (it keeps the window's blocks at its own block "
                            f"size); use store blocks of {bb} tokens")


def as_engine(side):
    """An engine for planning: a `StoreSpec`'s `engine`, anything else as given."""
    return side.engine if isinstance(side, StoreSpec) else side
