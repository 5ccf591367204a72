"""Numpy integers are accepted wherever a spec takes an int (sizes often come out of
numpy arithmetic or a torch config), and make the same spec, with the same fingerprint,
as the Python ints; numpy floats and bools are refused like Python ones."""

from __future__ import annotations

import numpy as np
import pytest

from kvplan import (AttentionSpec, EngineSpec, GatedDeltaNetSpec, LayerGroup, Mamba2Spec, ModelSpec, SpecError,
                    StoreSpec, fingerprint, plan)

INTS = (np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64)


@pytest.mark.parametrize("kind", INTS)
def test_numpy_integers_make_the_same_specs(kind):
    attention = AttentionSpec(num_kv_heads=kind(8), head_dim=kind(64), sliding_window=kind(32))
    assert attention == AttentionSpec(num_kv_heads=8, head_dim=64, sliding_window=32)
    assert type(attention.num_kv_heads) is int
    state = Mamba2Spec(num_heads=kind(4), head_dim=kind(2), n_groups=kind(1), d_state=kind(2), conv_kernel=kind(4))
    assert state == Mamba2Spec(num_heads=4, head_dim=2, n_groups=1, d_state=2, conv_kernel=4)
    gdn = GatedDeltaNetSpec(num_k_heads=kind(2), num_v_heads=kind(4), head_k_dim=kind(8), head_v_dim=kind(8),
                            conv_kernel=kind(4))
    m = ModelSpec(name="m", layers=(attention, state, gdn), model_layers=[kind(0), kind(1), kind(1)],
                  num_model_layers=kind(3))
    e = EngineSpec(model=m, tp=kind(2), pp=kind(1), block_tokens=kind(16), kernel_block_tokens=kind(16),
                   num_speculative_tokens=kind(1), num_blocks=kind(64),
                   groups=(LayerGroup(layers=(0,), block_tokens=kind(16)), LayerGroup(layers=(1, 2))))
    plain = EngineSpec(model=ModelSpec(name="m", layers=m.layers, model_layers=(0, 1, 1), num_model_layers=3), tp=2,
                       block_tokens=16, kernel_block_tokens=16, num_speculative_tokens=1, num_blocks=64,
                       groups=(LayerGroup(layers=(0,), block_tokens=16), LayerGroup(layers=(1, 2))))
    assert e == plain and fingerprint(e) == fingerprint(plain)
    assert StoreSpec(model=m, block_tokens=kind(32), num_blocks=kind(8)) == StoreSpec(model=m, block_tokens=32,
                                                                                      num_blocks=8)
    assert plan(e, plain).fingerprint == plan(plain, plain).fingerprint


@pytest.mark.parametrize("bad", [np.float64(2.0), np.float32(2), np.bool_(True), True, 2.0, "2"])
def test_floats_and_bools_are_refused(bad):
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=64),))
    with pytest.raises(SpecError, match="EngineSpec.tp"):
        EngineSpec(model=m, tp=bad)
    with pytest.raises(SpecError, match="AttentionSpec.num_kv_heads"):
        AttentionSpec(num_kv_heads=bad, head_dim=64)
