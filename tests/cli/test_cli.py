"""The command line as a user runs it (a subprocess per call): every built-in model and
five real configs read from files, with --json (validated against the schema tables of
docs/json.md), --svg, --request-tokens, --verify; every flag that used to be ignored,
now applied or refused; and the examples of docs/cli.md, which must print what they show."""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvplan.models import MODELS

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"
CONFIGS = ROOT / "tests" / "data" / "hf_configs"


def kvplan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvplan", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def ran(*args: str) -> subprocess.CompletedProcess:
    """`kvplan(*args)`, from a batch that ran every command of this module at once, a few
    processes at a time (each is mostly interpreter start-up): the suite's wall time is
    then a fraction of running them one by one."""
    return _batch()[args]


@functools.cache
def _batch() -> dict:
    commands = [*MODEL_COMMANDS.values(), *[c for name in CONFIG_FILES for c in CONFIG_COMMANDS[name]],
                *[("plan", "--dst-tp", "2", *flags, "--json") for flags, _, _ in APPLIED],
                *[("plan", *flags) for flags, _ in REFUSED], *[tuple(c.split()) for c, _ in EXAMPLES],
                *COSTS_COMMANDS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(commands, pool.map(lambda c: kvplan(*c), commands), strict=True))


# -- the JSON schema, as docs/json.md documents it ----------------------------------------

JSON_TYPES = {"string": str, "int": int, "bool": bool, "object": dict, "list": list, "number": (int, float)}


def _schema_tables() -> list[dict]:
    """The field tables of docs/json.md's kvplan.plan-summary/1 section: [{field: (type, optional)}]."""
    text = (ROOT / "docs" / "json.md").read_text().split("## `kvplan.plan-summary/1`", 1)[1]
    tables, current = [], None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| field |"):
            current = {}
            tables.append(current)
        elif current is not None and line.startswith("| `") and len(cells) >= 3:
            for field in re.findall(r"`([a-z_A-Z]+)`", cells[0]):
                current[field] = (cells[1], cells[2].startswith("optional"))
        elif not line.startswith("|"):
            current = None
    return tables


SUMMARY, RANK, REQUEST = _schema_tables()


def _check(obj: dict, schema: dict, where: str) -> None:
    assert set(obj) <= set(schema), f"{where}: fields not in docs/json.md: {sorted(set(obj) - set(schema))}"
    for field, (kind, optional) in schema.items():
        if field not in obj:
            assert optional, f"{where}: required field {field!r} missing"
            continue
        assert isinstance(obj[field], JSON_TYPES[kind]) and not (kind in ("int", "number") and
                                                               isinstance(obj[field], bool)), (where, field, kind)


def check_summary(doc: dict) -> None:
    """`doc` against docs/json.md's kvplan.plan-summary/1 tables, nested objects included."""
    assert doc["schema"] == "kvplan.plan-summary/1"
    _check(doc, SUMMARY, "summary")
    for rank in doc["ranks"]:
        _check(rank, RANK, "rank")
    if "request" in doc:
        _check(doc["request"], REQUEST, "request")
    assert doc["src"]["schema"] == doc["dst"]["schema"] == "kvplan.engine/1"


# -- every built-in model, five config files ----------------------------------------------

PICTURES = Path(tempfile.mkdtemp(prefix="kvplan-cli-"))  # the batch's pictures, removed at exit
atexit.register(shutil.rmtree, PICTURES, ignore_errors=True)
MODEL_COMMANDS = {model: ("plan", "--model", model, "--src-tp", "1", "--dst-tp", "2", "--json", "--verify",
                          "--request-tokens", "4096", "--svg", str(PICTURES / f"{model}.svg")) for model in MODELS}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_built_in_model_plans_verifies_draws_and_counts(model):
    picture = PICTURES / f"{model}.svg"
    done = ran(*MODEL_COMMANDS[model])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    doc = json.loads(done.stdout)
    check_summary(doc)
    assert doc["verified"] is True and doc["request"]["request_tokens"] == 4096
    assert len(doc["ranks"]) == 2 and doc["request"]["total_bytes"] > 0
    assert ET.parse(picture).getroot().get("data-dst-rank") == "0"


CONFIG_FILES = ["llama4", "gpt_oss", "deepseek_v2", "qwen3_next", "mamba2"]
CONFIG_COMMANDS = {name: [("plan", "--hf-config", str(CONFIGS / f"{name}.json"), "--src-tp", src_tp, "--dst-tp",
                           dst_tp, "--verify", "--json", "--rows", "--request-tokens", "1000", "--svg",
                           str(PICTURES / f"{name}-{src_tp}-{dst_tp}.svg"))
                          for src_tp, dst_tp in (("2", "1"), ("1", "2"))] for name in CONFIG_FILES}


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_a_config_file_plans_both_ways(name):
    for command in CONFIG_COMMANDS[name]:
        done = ran(*command)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        check_summary(doc)
        assert doc["src"]["model"]["name"] == json.loads((CONFIGS / f"{name}.json").read_text())["_name_or_path"]
        assert doc["plan"]["schema"] == "kvplan.plan/1" and doc["plan"]["fingerprint"] == doc["fingerprint"]
        assert ET.parse(command[-1]).getroot().findall(f"{SVG}g")  # a picture with its layer classes


def test_two_configs_that_differ_are_refused_with_every_difference(tmp_path):
    fp16 = dict(json.loads((CONFIGS / "llama.json").read_text()), torch_dtype="float16", num_key_value_heads=4)
    (tmp_path / "config.json").write_text(json.dumps(fp16))
    done = kvplan("plan", "--src-config", str(CONFIGS / "llama.json"), "--dst-config", str(tmp_path / "config.json"))
    assert done.returncode == 2 and done.stdout == ""
    assert "dtype" in done.stderr and "num_kv_heads" in done.stderr and done.stderr.count("\n") == 1


# -- flags that used to be ignored: applied, or refused ------------------------------------

APPLIED = [  # (flags, where in the JSON summary, the value it must take)
    (["--dst-layout", "NHD"], ("dst", "kv_layout"), "NHD"),
    (["--dst-storage", "separate"], ("dst", "kv_storage"), "separate"),
    (["--dst-kernel-block", "8"], ("dst", "kernel_block_tokens"), 8),
    (["--model", "nemotron-3-nano-30b-a3b", "--spec-tokens", "2"], ("dst", "num_speculative_tokens"), 2),
    (["--model", "nemotron-3-nano-30b-a3b", "--conv-strategy", "staged"], ("conv_strategy",), "staged"),
    (["--kv-dtype", "fp8"], ("dst", "model", "layers", 0, "dtype"), "float8_e4m3fn"),
    (["--kv-dtype", "auto"], ("dst", "model", "layers", 0, "dtype"), "bfloat16"),
    (["--model", "deepseek-v3", "--kv-dtype", "fp8_ds_mla"], ("dst", "model", "layers", 0, "head_dim"), 656),
    (["--transport", "nixl", "--model", "llama-3.1-8b", "--dst-layout", "NHD"], ("transfer_strategy",), "bounce"),
    (["--costs"], ("costs", 0, "conv_strategy"), "direct"),
    (["--vllm", "--backend", "flash_attn", "--model", "nemotron-3-nano-30b-a3b"], ("dst", "pooled"), True),
]


@pytest.mark.parametrize("flags, path, value", APPLIED, ids=[" ".join(a[0]) for a in APPLIED])
def test_a_flag_takes_effect(flags, path, value):
    done = ran("plan", "--dst-tp", "2", *flags, "--json")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    for key in path:
        got = got[key]
    assert got == value


REFUSED = [  # (flags, what the one-line error must say)
    (["--vllm", "--dst-layout", "NHD"], "--dst-layout NHD: --vllm"),
    (["--vllm", "--dst-storage", "separate"], "--dst-storage separate: --vllm"),
    (["--vllm", "--dst-kernel-block", "16"], "--dst-kernel-block 16: --vllm"),
    (["--backend", "flashinfer"], "--backend flashinfer chooses vLLM's attention backend: it needs --vllm"),
    (["--spec-tokens", "2"], "--spec-tokens 2 adds conv-state rows; llama-3.1-8b has no state layers"),
    (["--conv-strategy", "staged"], "--conv-strategy staged moves conv state; llama-3.1-8b has no state layers"),
    (["--rows"], "--rows adds the plan's rows to the JSON output: it needs --json"),
    (["--bandwidth", "50"], "--bandwidth 50 times a request: it needs --request-tokens"),
    (["--request-tokens", "0"], "request_tokens must be an int from 1"),
    (["--request-tokens", "64", "--bandwidth", "-1"], "bandwidth must be a positive number"),
    (["--model", "llama-3.1-8b", "--hf-config", "x.json"], "--model llama-3.1-8b and --hf-config both name the model"),
    (["--src-config", "x.json"], "--src-config needs --dst-config"),
    (["--hf-config", "no-such.json"], "from_hf_config('no-such.json'): cannot read it"),
    (["--kv-dtype", "fp8_ds_mla"], "kv dtype 'fp8_ds_mla' is DeepSeek's packed MLA cache"),
    (["--kv-dtype", "int3"], "unknown dtype 'int3'"),
    (["--svg", "/no/such/dir/map.svg"], "--svg /no/such/dir/map.svg: cannot write it"),
]


@pytest.mark.parametrize("flags, message", REFUSED, ids=[" ".join(r[0]) for r in REFUSED])
def test_a_flag_that_would_change_nothing_or_cannot_apply_is_refused(flags, message):
    done = ran("plan", *flags)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("kvplan: error: ") and message in done.stderr and done.stderr.count("\n") == 1, \
        done.stderr


COSTS = ("plan", "--model", "nemotron-3-nano-30b-a3b", "--src-tp", "1", "--dst-tp", "2", "--costs")
COSTS_COMMANDS = [COSTS + extra for extra in ((), ("--json",), ("--rank", "1"), ("--rank", "1", "--json"))]


def _text_costs(stdout: str) -> dict[str, list[int]]:
    """The --costs table of the text output: {conv strategy: its numbers}."""
    rows = [line.strip().strip("|").split("|") for line in stdout.split("per span of a token group", 1)[1].splitlines()
            if line.startswith("| ") and not line.startswith("| conv strategy")]
    return {cells[0].strip(): [int(c.replace(",", "")) for c in cells[1:]] for cells in rows}


def test_costs_count_the_same_ranks_in_text_and_json():
    """--costs counts every decode rank, or R's alone with --rank, in the text and in
    --json alike (the text once summed every rank under --rank)."""
    fields = ("attention_descriptors", "attention_bytes", "state_descriptors", "state_bytes", "local_copies",
              "local_bytes", "scratch_bytes")
    seen = []
    for extra in ((), ("--rank", "1")):
        text, data = ran(*COSTS, *extra), ran(*COSTS, *extra, "--json")
        assert text.returncode == 0 and data.returncode == 0, text.stderr + data.stderr
        table = _text_costs(text.stdout)
        assert ("decode rank 1" if extra else "all decode ranks") in text.stdout
        for cost in json.loads(data.stdout)["costs"]:
            assert table[cost["conv_strategy"]] == [cost[f] for f in fields]
        seen.append(table)
    assert seen[0] != seen[1]  # one rank of two counts less than both


def test_version_and_models_json():
    assert re.fullmatch(r"kvplan \S+\n", kvplan("--version").stdout)
    doc = json.loads(kvplan("models", "--json").stdout)
    assert doc["schema"] == "kvplan.models/1" and {m["name"] for m in doc["models"]} == set(MODELS)


# -- docs/cli.md, as shown ------------------------------------------------------------------

EXAMPLES = re.findall(r"```console\n\$ kvplan (.*?)\n(.*?)```", (ROOT / "docs" / "cli.md").read_text(), re.S)


def _matches(shown: list[str], got: list[str]) -> bool:
    """`got` equals `shown`, where a `...` line in `shown` stands for any lines."""
    if not shown:
        return not got
    if shown[0] == "...":
        return any(_matches(shown[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and got[0] == shown[0] and _matches(shown[1:], got[1:])


@pytest.mark.parametrize("command, shown", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_docs_cli_examples_print_what_they_show(command, shown):
    done = ran(*command.split())
    got = (done.stdout + done.stderr).rstrip("\n").splitlines()
    assert _matches(shown.rstrip("\n").splitlines(), got), "\n".join(got[:40])
