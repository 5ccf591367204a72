"""Pipeline stages hold whole model layers, as engines split them: a cache layer sits on
the stage of its model layer (`ModelSpec.model_layers`), the model's own layers split by
vLLM's rule (get_pp_indices: even, the remainder to stages -2, -3, ..., never the last).
Plans over such stages verify; bad mappings end in SpecError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import (AttentionSpec, EngineSpec, Mamba2Spec, ModelSpec, ShardingError, SpecError, engine_from_json,
                    engine_to_json, from_hf_config, get_model, plan, verify)

A = AttentionSpec(num_kv_heads=4, head_dim=8)
M = Mamba2Spec(num_heads=4, head_dim=2, n_groups=1, d_state=2, conv_kernel=4)


def _stage_of_model_layer(layer: int, count: int, pp: int) -> int:
    """vLLM 0.33's get_pp_indices, restated: partition sizes count // pp, plus one for
    stages -2, -3, ... while a remainder is left."""
    sizes = [count // pp] * pp
    for i in range(2, count % pp + 2):
        sizes[-i] += 1
    bound = 0
    for stage, size in enumerate(sizes):
        bound += size
        if layer < bound:
            return stage
    raise AssertionError("layer past the model")


def test_falcon_h1_keeps_each_layers_attention_and_mamba_on_one_stage():
    e = EngineSpec(model=get_model("falcon-h1-7b"), pp=3)
    # vLLM: get_pp_indices(44, r, 3) = (0, 15), (15, 30), (30, 44); two cache layers each
    assert e.stage_layers == ((0, 30), (30, 60), (60, 88))
    assert all(e.stage_of(2 * k) == e.stage_of(2 * k + 1) for k in range(44))


def test_nemotron_h_counts_its_moe_layers_for_the_split():
    model = get_model("nemotron-3-nano-30b-a3b")
    assert model.num_model_layers == 52 and model.num_layers == 29
    for pp in (2, 3, 4):
        e = EngineSpec(model=model, pp=pp)
        assert [e.stage_of(i) for i in range(29)] == [_stage_of_model_layer(m, 52, pp) for m in model.model_layers]


def test_hf_configs_record_model_layers():
    nemotron = from_hf_config({"model_type": "nemotron_h", "hybrid_override_pattern": "M-M*E", "hidden_size": 64,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "mamba_num_heads": 4,
                               "mamba_head_dim": 16, "n_groups": 1, "ssm_state_size": 8, "conv_kernel": 4,
                               "num_hidden_layers": 5})
    assert nemotron.model_layers == (0, 2, 3) and nemotron.num_model_layers == 5
    falcon = from_hf_config({"model_type": "falcon_h1", "num_hidden_layers": 3, "hidden_size": 64,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "mamba_n_heads": 4,
                             "mamba_d_head": 16, "mamba_n_groups": 1, "mamba_d_state": 8, "mamba_d_conv": 4})
    assert falcon.model_layers == (0, 0, 1, 1, 2, 2) and falcon.num_model_layers == 3
    llama = get_model("llama-3.1-8b")
    assert llama.model_layers is None and llama.model_layer_count == 32


@st.composite
def _mapped_models(draw):
    count = draw(st.integers(1, 8), label="cache_layers")
    layers = tuple(draw(st.sampled_from([A, M]), label=f"layer{i}") for i in range(count))
    gaps = draw(st.lists(st.integers(0, 2), min_size=count, max_size=count), label="gaps")
    ids, at = [], draw(st.integers(0, 2), label="first")
    for gap in gaps:  # 0: the same model layer as the cache layer before (Falcon-H1 style)
        at += gap
        ids.append(at)
    total = ids[-1] + 1 + draw(st.integers(0, 3), label="tail")
    return ModelSpec(name="mapped", layers=layers, model_layers=tuple(ids), num_model_layers=total)


@settings(max_examples=150, deadline=None)
@given(model=_mapped_models(), src_pp=st.integers(1, 4), dst_pp=st.integers(1, 4), tps=st.sampled_from([(1, 2),
                                                                                                          (2, 1), (2, 2)]))
def test_stages_split_model_layers_and_plans_verify(model, src_pp, dst_pp, tps):
    engines = []
    for pp, tp in zip((src_pp, dst_pp), tps, strict=True):
        if pp > model.num_model_layers:
            with pytest.raises(ShardingError):
                EngineSpec(model=model, pp=pp, tp=tp)
            return
        e = EngineSpec(model=model, pp=pp, tp=tp)
        for layer, model_layer in enumerate(model.model_layers):
            assert e.stage_of(layer) == _stage_of_model_layer(model_layer, model.num_model_layers, pp)
        covered = [i for start, end in e.stage_layers for i in range(start, end)]
        assert covered == list(range(model.num_layers))  # every cache layer on exactly one stage
        engines.append(e)
    verify(plan(*engines))
    back = engine_from_json(engine_to_json(engines[0]))
    assert back == engines[0] and back.stage_layers == engines[0].stage_layers


@pytest.mark.parametrize("fields, words", [
    ({"model_layers": (0, 1)}, "2 entries for 3 cache layers"),
    ({"model_layers": (0, 2, 1)}, "must not decrease"),
    ({"model_layers": (0, 1, 5), "num_model_layers": 4}, "past num_model_layers=4"),
    ({"num_model_layers": 4}, "needs model_layers"),
    ({"model_layers": (0, 1, -1)}, "model layer indices"),
    ({"model_layers": (0, 1, True)}, "model layer indices"),
    ({"model_layers": (0, 1, 2.0)}, "model layer indices"),
    ({"model_layers": "012"}, "sequence"),
    ({"model_layers": (0, 1, 2), "num_model_layers": 0}, "num_model_layers"),
])
def test_bad_model_layer_maps_are_refused(fields, words):
    with pytest.raises(SpecError, match=words):
        ModelSpec(name="m", layers=(A, M, A), **fields)


def test_a_document_with_model_layers_round_trips():
    e = EngineSpec(model=get_model("falcon-h1-7b"), pp=2)
    doc = json.loads(engine_to_json(e))
    assert doc["model"]["num_model_layers"] == 44 and doc["model"]["model_layers"][:4] == [0, 0, 1, 1]
    assert engine_from_json(json.dumps(doc)) == e
