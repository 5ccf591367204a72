"""Hugging Face configs from where users keep them: a config.json, a model folder, a
Hugging Face cache folder or one of its snapshots; the model's name from the config or
the folder; and the KV-cache dtype an engine applies (`with_kv_dtype`)."""

from __future__ import annotations

import json

import pytest

from kvplan import EngineSpec, get_model, plan, verify
from kvplan.errors import SpecError
from kvplan.models import from_hf_config, mla, with_kv_dtype

LLAMA = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 4096, "num_attention_heads": 32,
         "num_key_value_heads": 8, "torch_dtype": "bfloat16"}


def _write(path, config) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))


def _cache(root, repo: str, revisions: dict, main: str | None):
    """A Hugging Face cache folder for `repo` with one snapshot per revision."""
    folder = root / f"models--{repo.replace('/', '--')}"
    for revision, config in revisions.items():
        _write(folder / "snapshots" / revision / "config.json", config)
    if main is not None:
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(main + "\n")
    return folder


def test_a_file_a_folder_and_a_dict_read_alike(tmp_path):
    _write(tmp_path / "llama-4l" / "config.json", LLAMA)
    from_dict = from_hf_config(LLAMA)
    for source in (tmp_path / "llama-4l" / "config.json", str(tmp_path / "llama-4l" / "config.json"),
                   tmp_path / "llama-4l", str(tmp_path / "llama-4l")):
        model = from_hf_config(source)
        assert model.layers == from_dict.layers and model.name == "llama-4l"  # named after its folder
    assert from_dict.name == "llama"  # a dict without _name_or_path: its model_type


def test_a_cache_folder_reads_the_revision_refs_main_names(tmp_path):
    old, new = dict(LLAMA, num_key_value_heads=4), LLAMA
    folder = _cache(tmp_path, "meta-llama/Llama-3.1-8B", {"aaa": old, "bbb": new}, main="bbb")
    model = from_hf_config(folder)
    assert model.name == "meta-llama/Llama-3.1-8B" and model.layers[0].num_kv_heads == 8
    snapshot = from_hf_config(folder / "snapshots" / "aaa")  # a snapshot folder: that revision, same name
    assert snapshot.name == "meta-llama/Llama-3.1-8B" and snapshot.layers[0].num_kv_heads == 4


def test_a_cache_folder_without_refs_needs_exactly_one_snapshot(tmp_path):
    one = _cache(tmp_path / "a", "org/one", {"r1": LLAMA}, main=None)
    assert from_hf_config(one).name == "org/one"
    two = _cache(tmp_path / "b", "org/two", {"r1": LLAMA, "r2": LLAMA}, main=None)
    with pytest.raises(SpecError, match="no refs/main, and 2 snapshots.*r1, r2"):
        from_hf_config(two)
    stale = _cache(tmp_path / "c", "org/three", {"r1": LLAMA}, main="r9")
    with pytest.raises(SpecError, match="refs/main names revision 'r9'"):
        from_hf_config(stale)


def test_the_config_names_itself_first(tmp_path):
    _write(tmp_path / "x" / "config.json", dict(LLAMA, _name_or_path="meta-llama/Llama-3.1-8B-Instruct"))
    assert from_hf_config(tmp_path / "x").name == "meta-llama/Llama-3.1-8B-Instruct"
    assert from_hf_config(dict(LLAMA, _name_or_path="/home/me/ckpts/llama-8b/")).name == "llama-8b"
    assert from_hf_config(dict(LLAMA, _name_or_path="")).name == "llama"
    assert from_hf_config(LLAMA, name="mine").name == "mine"  # an explicit name wins
    with pytest.raises(SpecError, match="name"):
        from_hf_config(LLAMA, name="")


@pytest.mark.parametrize("content, match", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "holds an object, got list"),
    (b"\xff\xfe\x00", "not a UTF-8"),
])
def test_files_that_are_not_configs_are_refused(tmp_path, content, match):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=match):
        from_hf_config(path)


def test_folders_without_a_config_are_refused(tmp_path):
    with pytest.raises(SpecError, match="no config.json there"):
        from_hf_config(tmp_path)
    with pytest.raises(SpecError, match="cannot read"):
        from_hf_config(tmp_path / "missing.json")
    for wrong in (3, None, b"config.json", ["a"]):
        with pytest.raises(SpecError, match="from_hf_config takes"):
            from_hf_config(wrong)


# -- the KV-cache dtype ------------------------------------------------------------------

def test_auto_keeps_the_model_dtype_and_a_dtype_changes_only_kv_layers():
    hybrid = get_model("nemotron-3-nano-30b-a3b")
    assert with_kv_dtype(hybrid, "auto") is hybrid
    fp8 = with_kv_dtype(hybrid, "fp8")
    for before, after in zip(hybrid.layers, fp8.layers, strict=True):
        if before.holds_tokens:
            assert after.dtype == "float8_e4m3fn" and after.bytes_per_token * 2 == before.bytes_per_token
        else:
            assert after == before  # conv / SSM state keep their dtypes
    assert from_hf_config(dict(LLAMA, torch_dtype="float16")).layers[0].dtype == "float16"  # "auto"'s source


def test_deepseek_packed_mla_pages_are_656_and_352_bytes_per_token():
    ds = get_model("deepseek-v3")
    for kv_dtype, width in (("fp8_ds_mla", 656), ("nvfp4_ds_mla", 352)):
        packed = with_kv_dtype(ds, kv_dtype)
        assert {layer.bytes_per_token for layer in packed.layers} == {width}
        p = plan(EngineSpec(model=packed, tp=8, block_tokens=64), EngineSpec(model=packed, tp=2, block_tokens=64))
        verify(p)
        assert p.reads(1).total_bytes == len(ds.layers) * 64 * width  # one replica's page per layer


@pytest.mark.parametrize("model, kv_dtype, match", [
    ("llama-3.1-8b", "fp8_ds_mla", "layer 0 is not an MLA layer"),
    ("llama-3.1-8b", "turboquant_k8v4", "unknown dtype 'turboquant_k8v4'"),
    ("llama-3.1-8b", 8, "must be a string"),
])
def test_kv_dtypes_that_do_not_apply_are_refused(model, kv_dtype, match):
    with pytest.raises(SpecError, match=match):
        with_kv_dtype(get_model(model), kv_dtype)


def test_packed_mla_needs_deepseek_latent():
    other = mla("mla-256", 2, 192, 64)
    with pytest.raises(SpecError, match="latent of 256"):
        with_kv_dtype(other, "fp8_ds_mla")
