"""Bad input raises the specific `KvplanError` subclass, and its message quotes the
offending values (so the message alone reproduces the problem).

Each case is (id, action, error class, strings the message must contain). Cases where
kvplan does not (yet) raise properly are marked xfail(strict=True) with the reason, so
they stay visible and turn into failures once fixed without updating this file.
"""

from __future__ import annotations

import subprocess
import sys

import attrs
import numpy as np
import pytest

from kvplan import (AttentionSpec, BlockError, BoundsError, EngineSpec, LayerGroup, ModelMismatchError, ModelSpec,
                    PlanError, RankError, ShardingError, SpecError, Transfer, engine_memory, from_hf_config, plan,
                    verify, vllm_engine)
from kvplan.cli import main
from kvplan.models import get_model
from kvplan.report import plan_cost
from kvplan.spec import pp_layer_ranges

A = AttentionSpec


def model(*layers, name="m"):
    return ModelSpec(name=name, layers=layers)


M4 = model(*(A(8, 128),) * 4)  # 4 layers, 8 KV heads x 128, bf16


def engine(m=M4, **kw):
    return EngineSpec(model=m, **kw)


def pair(src_m=M4, dst_m=M4, **dst_kw):
    return plan(engine(src_m), engine(dst_m, **dst_kw))


# P TP 2 -> D TP 4, 10 / 20 blocks: D rank r reads heads 2r, 2r+1 from P rank r // 2
PLAN = plan(engine(tp=2, num_blocks=10), engine(tp=4, num_blocks=20))
UNBOUNDED = plan(engine(), engine())  # num_blocks unknown: ids bounded by int64 offsets
TINY = model(A(1, 1, dtype="int8"))   # small pages, so only the span is too large
WIDE = model(A(64, 1, dtype="int8"))  # 64 heads: a long span makes too many cells
LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4}
QWEN2 = dict(LLAMA, model_type="qwen2", sliding_window=64, use_sliding_window=True, max_window_layers=1)
JAMBA = dict(LLAMA, model_type="jamba", num_hidden_layers=8)
GEMMA4 = {"model_type": "gemma4_text", "num_hidden_layers": 6}


def case(name, action, error, quoted, xfail=None):
    """One bad input; `xfail` names a known defect (strict: the test fails once fixed)."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(action, error, quoted, id=name, marks=marks)


CASES = [
    # -- sharding: TP sizes no sharding satisfies ------------------------------------------
    case("heads-not-divisible-by-tp", lambda: engine(tp=3), ShardingError, ["8", "TP 3"]),
    case("tp-not-multiple-of-heads", lambda: engine(model(A(6, 128)), tp=16), ShardingError, ["TP 16", "6 KV heads"]),
    case("one-layer-heads-not-divisible", lambda: engine(model(A(8, 128), A(6, 128)), tp=4), ShardingError,
         ["6 KV heads of layer 1", "TP 4"]),
    case("pp-exceeds-layers", lambda: engine(pp=5), ShardingError, ["PP 5", "4 layers"]),
    # -- specs: non-positive sizes, unknown dtypes / layouts, MLA shape ---------------------
    case("zero-kv-heads", lambda: A(0, 128), SpecError, ["num_kv_heads", "got 0"]),
    case("negative-head-dim", lambda: A(8, -1), SpecError, ["head_dim", "-1"]),
    case("zero-v-head-dim", lambda: A(8, 128, head_dim_v=0), SpecError, ["head_dim_v", "got 0"]),
    case("float-head-dim", lambda: A(8, 128.0), SpecError, ["head_dim", "128.0"]),
    case("zero-sliding-window", lambda: A(8, 128, sliding_window=0), SpecError, ["sliding_window", "got 0"]),
    case("unknown-dtype", lambda: A(8, 128, dtype="int4"), SpecError, ["'int4'", "bfloat16"]),
    case("dtype-not-a-string", lambda: A(8, 128, dtype=None), SpecError, ["None"]),
    case("mla-with-two-heads", lambda: A(2, 576, mla=True), SpecError, ["num_kv_heads=2"]),
    case("model-without-layers", lambda: ModelSpec(name="empty", layers=()), SpecError, ["'empty'"]),
    case("layer-not-a-spec", lambda: model(A(8, 128), 7), SpecError, ["layer 1", "7"]),
    case("zero-tp", lambda: engine(tp=0), SpecError, ["tp", "got 0"]),
    case("zero-pp", lambda: engine(pp=0), SpecError, ["pp", "got 0"]),
    case("negative-block", lambda: engine(block_tokens=-16), SpecError, ["block_tokens", "-16"]),
    case("zero-num-blocks", lambda: engine(num_blocks=0), SpecError, ["num_blocks", "got 0"]),
    case("tp-as-string", lambda: engine(tp="2"), SpecError, ["tp", "'2'"]),
    case("unknown-layout", lambda: engine(kv_layout="NHC"), SpecError, ["'NHC'", "'HND'"]),
    case("unknown-storage", lambda: engine(kv_storage="split"), SpecError, ["'split'", "'packed'"]),
    case("kernel-block-not-dividing", lambda: engine(block_tokens=32, kernel_block_tokens=24), SpecError,
         ["32 tokens", "24-token"]),
    case("kernel-block-larger-than-block", lambda: engine(block_tokens=16, kernel_block_tokens=32), SpecError,
         ["16 tokens", "32-token"]),
    case("plan-of-a-model", lambda: plan(M4, engine()), SpecError, ["ModelSpec"]),
    case("unknown-built-in-model", lambda: get_model("llama-9"), SpecError, ["'llama-9'", "llama-3.1-8b"]),
    case("engine-of-a-string", lambda: engine("llama-3.1-8b"), SpecError, ["'llama-3.1-8b'"]),
    # -- P and D describe different models ----------------------------------------------------
    case("layer-count-differs", lambda: pair(dst_m=model(*(A(8, 128),) * 5, name="m5")), ModelMismatchError,
         ["4 layers", "5", "'m5'"]),
    case("kv-heads-differ", lambda: pair(dst_m=model(*(A(8, 128),) * 3, A(4, 128))), ModelMismatchError,
         ["layer 3", "num_kv_heads", "8", "4"]),
    case("head-dim-differs", lambda: pair(dst_m=model(*(A(8, 64),) * 4)), ModelMismatchError,
         ["layer 0", "head_dim", "128", "64"]),
    case("v-head-dim-differs", lambda: pair(dst_m=model(*(A(8, 128, head_dim_v=64),) * 4)), ModelMismatchError,
         ["head_dim_v", "None", "64"]),
    case("dtype-differs", lambda: pair(dst_m=model(*(A(8, 128, dtype="fp8"),) * 4)), ModelMismatchError,
         ["dtype", "'bfloat16'", "'float8_e4m3fn'"]),
    case("mla-vs-attention", lambda: pair(dst_m=model(*(A(1, 576, mla=True),) * 4)), ModelMismatchError,
         ["layer 0", "mla", "576"]),
    case("sliding-window-differs", lambda: pair(dst_m=model(*(A(8, 128, sliding_window=1024),) * 4)),
         ModelMismatchError, ["sliding_window", "1024"]),
    # -- block ids of a request -----------------------------------------------------------------
    case("src-block-out-of-range", lambda: PLAN.lower(0, [3, 10], [1, 2]), BlockError, ["10", "10 blocks"]),
    case("dst-block-out-of-range", lambda: PLAN.lower(0, [3, 4], [1, 20]), BlockError, ["20", "20 blocks"]),
    case("negative-block-id", lambda: PLAN.lower(0, [-1, 4], [1, 2]), BlockError, ["-1"]),
    case("unequal-block-lists", lambda: PLAN.lower(0, [1, 2, 3], [1, 2]), BlockError, ["3 prefill", "2 decode"]),
    case("blocks-cover-other-tokens", lambda: plan(engine(block_tokens=16), engine(block_tokens=48)).lower(
        0, [1, 2, 3, 4], [5]), BlockError, ["4 prefill blocks of 16", "1 decode blocks of 48"]),
    case("bool-block-ids", lambda: PLAN.lower(0, [True], [True]), BlockError, ["bool"]),
    case("float-block-ids", lambda: PLAN.lower(0, [1.5], [3]), BlockError, ["1.5"]),
    case("duplicate-dst-block", lambda: PLAN.lower(0, [1, 2], [3, 3]), BlockError, ["3"]),
    # -- ranks ------------------------------------------------------------------------------------
    case("lower-rank-too-large", lambda: PLAN.lower(4, [1], [1]), RankError, ["dst_rank 4", "4 ranks"]),
    case("lower-rank-negative", lambda: PLAN.lower(-1, [1], [1]), RankError, ["dst_rank -1"]),
    case("reads-rank-too-large", lambda: PLAN.reads(dst_rank=4), RankError, ["dst_rank 4"]),
    case("reads-rank-float", lambda: PLAN.reads(dst_rank=1.5), RankError, ["1.5"]),
    case("bind-without-source-bases", lambda: PLAN.lower(0, [1], [2]).bind({}, [0] * 4), RankError, ["rank 0"]),
    case("bind-short-dst-bases", lambda: PLAN.lower(3, [1], [2]).bind({1: [0] * 4}, [0]), SpecError,
         ["1 regions", "region 3"]),
    case("pp-ranges-zero-stages", lambda: pp_layer_ranges(4, 0), ShardingError, ["0"]),
    # -- sizes that cannot be real: a SpecError naming the limit, before any allocation ----
    case("src-tp-2-to-the-40", lambda: engine(tp=2**40), SpecError, ["EngineSpec.tp", "1,099,511,627,776", "MAX_TP"]),
    case("dst-tp-a-million", lambda: pair(tp=1_000_000), SpecError, ["1,000,000", "MAX_TP = 1,024"]),
    case("block-a-trillion-tokens", lambda: engine(block_tokens=10**12), SpecError,
         ["block_tokens", "1,000,000,000,000", "MAX_BLOCK_TOKENS"]),
    case("lcm-span-of-17-and-1000003", lambda: plan(engine(TINY, block_tokens=17), engine(TINY, block_tokens=1000003)),
         SpecError, ["17,000,051", "MAX_SPAN_TOKENS", "lcm"]),
    case("speculative-tokens-a-billion", lambda: engine(num_speculative_tokens=10**9), SpecError,
         ["num_speculative_tokens", "1,000,000,000", "MAX_SPECULATIVE_TOKENS"]),
    case("vllm-speculative-tokens-a-billion", lambda: vllm_engine("nemotron-3-nano-30b-a3b", num_speculative_tokens=10**9),
         SpecError, ["num_speculative_tokens", "MAX_SPECULATIVE_TOKENS"]),
    case("ten-million-layers", lambda: ModelSpec(name="m", layers=(A(1, 8),) * 10**7), SpecError,
         ["ModelSpec.layers", "10,000,000", "MAX_LAYERS"]),
    case("hf-config-a-trillion-layers", lambda: from_hf_config(dict(LLAMA, num_hidden_layers=10**12)), SpecError,
         ["num_hidden_layers", "1,000,000,000,000", "MAX_LAYERS"]),
    case("head-dim-2-to-the-63", lambda: A(8, 2**63), SpecError, ["head_dim", "9,223,372,036,854,775,808", "MAX_HEAD_DIM"]),
    case("page-over-a-gibibyte", lambda: engine_memory(engine(model(A(64, 8192)), block_tokens=2**14)), SpecError,
         ["logical block of layer 0", "MAX_PAGE_BYTES"]),
    case("cells-of-one-layer", lambda: plan(engine(WIDE, block_tokens=2**16), engine(WIDE, block_tokens=2**15)),
         SpecError, ["cells of layer 0", "MAX_LAYER_CELLS"]),
    case("templates-of-4096-distinct-layers", lambda: plan(
        engine(model(*(A(8, 1 + i) for i in range(4096)))), engine(model(*(A(8, 1 + i) for i in range(4096))), tp=8)),
         SpecError, ["decode TP 8 x 4096 distinct layers", "MAX_TEMPLATES"]),
    # -- block ids whose offsets do not fit int64 (num_blocks unset) ----------------------------
    case("block-id-2-to-the-51-wraps-below-the-buffer", lambda: UNBOUNDED.lower(0, [2**51 - 1], [1]), BlockError,
         ["2251799813685247", "int64"]),
    case("block-id-2-to-the-62-wraps-to-block-0", lambda: UNBOUNDED.lower(0, [1], [2**62]), BlockError,
         ["4611686018427387904", "int64"]),
    case("block-id-past-int64", lambda: UNBOUNDED.lower(0, [2**64], [1]), BlockError, ["integers"]),
    # -- wrong types: a KvplanError, never a TypeError / ZeroDivisionError / AttributeError --------
    case("vllm-engine-tp-0", lambda: vllm_engine("llama-3.1-8b", tp=0), SpecError, ["tp", "got 0"]),
    case("vllm-engine-backend-list", lambda: vllm_engine("llama-3.1-8b", backend=["flashinfer"]), SpecError,
         ["['flashinfer']"]),
    case("lower-rank-none", lambda: PLAN.lower(None, [1], [2]), RankError, ["dst_rank None"]),
    case("lower-blocks-an-int", lambda: PLAN.lower(0, 5, [1]), BlockError, ["got 5"]),
    case("model-layers-none", lambda: ModelSpec(name="m", layers=None), SpecError, ["ModelSpec.layers", "None"]),
    case("model-name-a-list", lambda: ModelSpec(name=["m"], layers=(A(1, 8),)), SpecError, ["ModelSpec.name", "['m']"]),
    case("engine-groups-an-int", lambda: engine(groups=5), SpecError, ["EngineSpec.groups", "5"]),
    case("verify-none", lambda: verify(None), SpecError, ["verify()", "NoneType"]),
    case("verify-tables-junk", lambda: verify(attrs.evolve(PLAN, tables=(1, 2))), PlanError, ["plan.tables"]),
    case("jamba-attn-layer-period-0", lambda: from_hf_config(dict(JAMBA, attn_layer_period=0)), SpecError,
         ["jamba", "attn_layer_period 0"]),
    case("hf-config-a-missing-path", lambda: from_hf_config("no/config.json"), SpecError,
         ["no/config.json", "cannot read"]),
    case("hf-config-a-number", lambda: from_hf_config(7), SpecError, ["dict", "int"]),
    case("hf-model-type-a-list", lambda: from_hf_config({"model_type": ["llama"]}), SpecError, ["['llama']"]),
    case("conv-strategy-an-array", lambda: plan(engine(), engine(), conv_strategy=np.array([])), SpecError,
         ["conv_strategy"]),
    case("cost-of-a-string", lambda: plan_cost("plan.json"), SpecError, ["str"]),
    case("transfer-float-offset", lambda: Transfer(dst_rank=0, src_rank=[0], src_region=[0], src_offset=[1.5],
                                                   dst_region=[0], dst_offset=[0], nbytes=[8]), SpecError, ["1.5"]),
    case("transfer-string-rank", lambda: Transfer(dst_rank=0, src_rank=["a"], src_region=[0], src_offset=[0],
                                                  dst_region=[0], dst_offset=[0], nbytes=[8]), SpecError, ["'a'"]),
    case("transfer-regions-an-int", lambda: Transfer(dst_rank=0, src_rank=[0], src_region=[0], src_offset=[0],
                                                     dst_region=[0], dst_offset=[0], nbytes=[8], dst_regions=5),
         SpecError, ["dst_regions", "5"]),
    case("transfer-negative-offset", lambda: Transfer(dst_rank=0, src_rank=[0], src_region=[0], src_offset=[-8],
                                                      dst_region=[0], dst_offset=[0], nbytes=[8]), BoundsError,
         ["src_offset -8"]),
    case("bind-negative-base", lambda: PLAN.lower(0, [1], [2]).bind({0: [-1] * 4}, [0] * 4), SpecError,
         ["integers >= 0", "-1"]),
    case("bind-huge-rank-ids", lambda: Transfer(dst_rank=0, src_rank=[2**40], src_region=[0], src_offset=[0],
                                                dst_region=[0], dst_offset=[0], nbytes=[8]).bind({}, [0]), RankError,
         ["rank 1099511627776"]),
    # -- silently accepted before: now refused, naming the value ----------------------------------
    case("mla-a-string", lambda: A(1, 576, mla="False"), SpecError, ["mla", "'False'"]),
    case("pooled-a-string", lambda: engine(pooled="no"), SpecError, ["pooled", "'no'"]),
    case("group-layers-floats", lambda: LayerGroup(layers=(0.9, 1.5)), SpecError, ["LayerGroup.layers", "0.9"]),
    case("block-ids-bytes", lambda: PLAN.lower(0, b"\x01\x02", [1, 2]), BlockError, ["bytes"]),
    case("block-ids-a-set", lambda: PLAN.lower(0, {1, 2}, [1, 2]), BlockError, ["set"]),
    case("block-ids-a-dict", lambda: PLAN.lower(0, {1: 2}, [1]), BlockError, ["dict"]),
    case("block-ids-a-string", lambda: PLAN.lower(0, "12", [1, 2]), BlockError, ["str", "'12'"]),
    case("hf-use-sliding-window-a-string", lambda: from_hf_config(dict(QWEN2, use_sliding_window="false")),
         SpecError, ["use_sliding_window", "'false'"]),
    case("hf-kv-shared-layers-negative", lambda: from_hf_config(GEMMA4 | {"num_kv_shared_layers": -2}), SpecError,
         ["num_kv_shared_layers", "-2"]),
    case("hf-head-dim-a-string", lambda: from_hf_config(dict(LLAMA, head_dim="128")), SpecError, ["head_dim", "'128'"]),
    case("hf-layer-types-unhashable", lambda: from_hf_config(dict(LLAMA, layer_types=[["full_attention"]] * 2)),
         SpecError, ["layer_types"]),
]


@pytest.mark.parametrize(("action", "error", "quoted"), CASES)
def test_bad_input_raises_named_error(action, error, quoted):
    with pytest.raises(error) as info:
        action()
    assert type(info.value) is error  # the specific subclass, not a sibling's subclass
    message = str(info.value)
    missing = [q for q in quoted if q not in message]
    assert not missing, f"{missing} not in message {message!r}"


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


# -- verify() rejects hand-corrupted plans -----------------------------------------------------


def _corrupt(column: str, layer: int, delta: int, dst_rank: int = 3):
    """PLAN with one value of `dst_rank`'s table changed in the row of `layer`."""
    table = PLAN.reads(dst_rank)
    values = getattr(table, column).copy()
    values[np.flatnonzero(table.layer == layer)[0]] += delta
    tables = list(PLAN.tables)
    tables[dst_rank] = attrs.evolve(table, **{column: values})
    return attrs.evolve(PLAN, tables=tuple(tables))


def _without_row(layer: int, dst_rank: int = 3, duplicate: bool = False):
    table = PLAN.reads(dst_rank)
    row = np.flatnonzero(table.layer == layer)[0]
    rows = np.r_[np.arange(len(table)), row] if duplicate else np.delete(np.arange(len(table)), row)
    return attrs.evolve(PLAN, tables=PLAN.tables[:dst_rank] + (table.select(rows),) + PLAN.tables[dst_rank + 1:])


def test_uncorrupted_plan_verifies():
    verify(PLAN)  # so the failures below come from the corruption alone


@pytest.mark.parametrize(("corrupted", "quoted"), [
    # D rank 3 reads heads 6,7 = P rank 1 bytes [16384, 32768); shifting the source by one
    # (head, token) cell (512 B) stays inside the page but reads the wrong elements
    pytest.param(lambda: _corrupt("src_offset", 2, -512), ["dst rank 3", "layer 2", "+15872", "wrong"],
                 id="source-offset-shifted"),
    pytest.param(lambda: _corrupt("dst_offset", 1, 512), ["dst rank 3", "layer 1", "+512", "outside"],
                 id="destination-offset-past-page"),
    pytest.param(lambda: _corrupt("nbytes", 0, 512), ["dst rank 3", "layer 0", "16896", "outside"],
                 id="read-past-source-page"),
    pytest.param(lambda: _corrupt("nbytes", 3, -512), ["dst rank 3", "layer 3", "missing", "15872"],
                 id="short-read-leaves-bytes-missing"),
    pytest.param(lambda: _corrupt("src_rank", 2, -1), ["dst rank 3", "layer 2", "r0"], id="wrong-source-rank"),
    pytest.param(lambda: _corrupt("src_rank", 2, 4), ["dst rank 3", "layer 2", "source rank 5"],
                 id="source-rank-outside-prefill"),
    pytest.param(lambda: _corrupt("src_region", 2, 1), ["dst rank 3", "layer 2", "reg 3"], id="wrong-source-region"),
    pytest.param(lambda: _without_row(1), ["dst rank 3", "layer 1", "missing"], id="dropped-row"),
    pytest.param(lambda: _without_row(1, duplicate=True), ["dst rank 3", "layer 1", "more than once"],
                 id="duplicated-row"),
])
def test_verify_rejects_corrupted_plan(corrupted, quoted):
    with pytest.raises(PlanError) as info:
        verify(corrupted())
    message = str(info.value)
    missing = [q for q in quoted if q not in message]
    assert not missing, f"{missing} not in message {message!r}"
    assert info.value.problems and all("dst rank 3" in p for p in info.value.problems)


# -- the command line turns KvplanError into one line on stderr and exit status 2 -------------


@pytest.mark.parametrize(("argv", "quoted"), [
    (["plan", "--src-tp", "3"], ["8 KV heads", "TP 3"]),
    (["plan", "--model", "gpt-5"], ["'gpt-5'", "llama-3.1-8b"]),
    (["plan", "--dst-block", "0"], ["block_tokens", "0"]),
    (["plan", "--rank", "9"], ["dst_rank 9"]),
    (["plan", "--kv-dtype", "int3"], ["'int3'"]),
    # argparse's own errors: one line too, not the whole usage text
    (["plan", "--src-tp", "two"], ["--src-tp", "invalid int value", "'two'"]),
    (["plan", "--bogus"], ["unrecognized arguments", "--bogus"]),
    (["plan", "--src-layout", "XYZ"], ["--src-layout", "invalid choice", "'XYZ'"]),
    ([], ["required", "command"]),
    (["nope"], ["invalid choice", "'nope'"]),
    # sizes that cannot be real
    (["plan", "--src-tp", "1099511627776"], ["1,099,511,627,776", "MAX_TP"]),
    (["plan", "--dst-tp", "1000000"], ["1,000,000", "MAX_TP"]),
    (["plan", "--src-block", "17", "--dst-block", "1000003", "--verify"], ["MAX_"]),
    (["plan", "--src-block", "1000000000000"], ["MAX_BLOCK_TOKENS"]),
    (["plan", "--model", "jamba-v0.1", "--spec-tokens", "1000000000"], ["MAX_SPECULATIVE_TOKENS"]),
    (["plan", "--model", "nemotron-3-nano-30b-a3b", "--vllm", "--spec-tokens", "1000000000"],
     ["MAX_SPECULATIVE_TOKENS"]),
    # flags that would do nothing are refused, not dropped
    (["plan", "--backend", "flashinfer"], ["--backend flashinfer", "needs --vllm"]),
    (["plan", "--spec-tokens", "2"], ["--spec-tokens 2", "llama-3.1-8b has no state layers"]),
    (["plan", "--conv-strategy", "staged"], ["--conv-strategy staged", "no state layers"]),
    (["plan", "--model", "nemotron-3-nano-30b-a3b", "--vllm", "--dst-layout", "NHD"], ["--dst-layout NHD", "--vllm"]),
    (["plan", "--model", "nemotron-3-nano-30b-a3b", "--vllm", "--src-storage", "separate"], ["--src-storage separate"]),
    (["plan", "--model", "nemotron-3-nano-30b-a3b", "--vllm", "--dst-kernel-block", "16"],
     ["--dst-kernel-block 16", "kernel blocks chosen by the backend"]),
    (["plan", "--model", "nemotron-3-nano-30b-a3b", "--vllm", "--src-conv-layout", "SD"], ["--src-conv-layout SD"]),
])
def test_cli_error_is_one_line_exit_2(capsys, argv, quoted):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("kvplan: error: ")
    assert all(q in err for q in quoted), err


def test_cli_output_cut_short_by_its_reader_ends_without_a_traceback():
    """`kvplan plan ... | head -1`: the reader closes the pipe early; kvplan stops quietly."""
    command = [sys.executable, "-m", "kvplan", "plan", "--model", "llama-3.1-70b", "--dst-tp", "16", "--json", "--rows"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.readline()
        process.stdout.close()  # like `head -1` exiting
        err = process.stderr.read().decode()
        status = process.wait(timeout=120)
    assert err == "" and status == 1, (status, err)


def test_cli_version_and_backend_options():
    """`kvplan --version` prints the installed version; `load_backend` refuses an option its
    backend does not take, and a timeout that is not a finite number >= 0, with a SpecError."""
    import contextlib
    import io
    from importlib.metadata import version

    from kvplan import SpecError, load_backend
    from kvplan.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--version"]) == 0
    assert out.getvalue().strip() == f"kvplan {version('kvplan')}"
    backend = load_backend("host", timeout_s=10)  # every backend takes timeout_s
    assert backend.timeout_s == 10.0
    backend.close()
    with pytest.raises(SpecError, match="takes the options timeout_s; got timeout"):
        load_backend("host", timeout=10)
    for bad in (-1, "5", float("nan"), float("inf"), True, None):
        with pytest.raises(SpecError, match="timeout_s must be a finite number of seconds >= 0"):
            load_backend("host", timeout_s=bad)
