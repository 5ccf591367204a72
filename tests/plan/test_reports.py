"""What a person reads: `verify()`'s report, `describe()` and `repr(plan)`."""

from __future__ import annotations

from kvplan import EngineSpec, get_model, plan, verify


def test_verify_reports_what_it_checked_in_the_units_of_the_plan():
    m = get_model("nemotron-3-nano-30b-a3b")
    p = plan(EngineSpec(model=m, tp=1), EngineSpec(model=m, tp=2))
    report = verify(p)
    cost = p.cost()  # counted by the report module from the tables, independently of verify
    assert (report.token_rows, report.token_bytes) == (cost.attention_descriptors, cost.attention_bytes)
    assert (report.state_rows, report.state_bytes) == (cost.state_descriptors, cost.state_bytes)
    assert report.decode_ranks == 2 and report.layers == 29 and report.cells > 0
    text = str(report)
    assert "\n" not in text and "per span" in text and "per state block" in text and "every byte right" in text


def test_describe_shows_every_layer_class_and_says_what_it_leaves_out():
    m = get_model("llama-3.1-8b")
    text = plan(EngineSpec(model=m, tp=2, kv_layout="NHD"), EngineSpec(model=m, tp=8)).describe()
    # NHD pages: a read per token of each block, 16 per layer: 8 shown, the rest counted
    assert "layers 0-31 (32 attention 8 x 128 bfloat16): 16 reads per span each" in text
    assert "... 8 more rows of layer 0 (plan.reads(0) has them all)" in text
    hybrid = plan(EngineSpec(model=get_model("granite-4.0-h-small")), EngineSpec(model=get_model(
        "granite-4.0-h-small"), tp=2)).describe()
    assert "attention 8 x 128 bfloat16" in hybrid and "mamba2 128 heads, conv bfloat16, ssm bfloat16" in hybrid
    assert "conv_B ch 0-127, conv_C ch 0-127, ssm h0-63" in hybrid  # a run across components, named part by part


def test_a_plan_repr_is_one_short_line():
    m = get_model("nemotron-3-nano-30b-a3b")
    text = repr(plan(EngineSpec(model=m, tp=1), EngineSpec(model=m, tp=4)))
    assert "\n" not in text and len(text) < 300 and "decode_ranks=4" in text
