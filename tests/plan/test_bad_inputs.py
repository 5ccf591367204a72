"""Bad input raises the specific `KvplanError` subclass, and its message quotes the
offending values (so the message alone reproduces the problem).

Each case is (id, action, error class, strings the message must contain). Cases where
kvplan does not (yet) raise properly are marked xfail(strict=True) with the reason, so
they stay visible and turn into failures once fixed without updating this file.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from kvplan import (AttentionSpec, BlockError, EngineSpec, ModelMismatchError, ModelSpec, PlanError, RankError,
                    ShardingError, SpecError, plan, verify)
from kvplan.cli import main
from kvplan.models import get_model
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
])
def test_cli_error_is_one_line_exit_2(capsys, argv, quoted):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("kvplan: error: ")
    assert all(q in err for q in quoted), err
