"""Where a Hugging Face config comes from: a dict, a ``config.json`` file, a model folder,
or a Hugging Face cache folder; and the model name it suggests.

A cache folder is what ``huggingface_hub`` downloads into (``~/.cache/huggingface/hub``):
``models--ORG--NAME/snapshots/REVISION/config.json``, with ``refs/main`` naming the
revision of the main branch. Given the ``models--ORG--NAME`` folder, the revision
``refs/main`` names is read (or the only snapshot there is); given a snapshot folder,
that one. This is the only file reading in kvplan, and it reads nothing but the config.

>>> read_config({"model_type": "llama", "_name_or_path": "meta-llama/Llama-3.1-8B"})[1]
'meta-llama/Llama-3.1-8B'
>>> read_config({"model_type": "llama", "_name_or_path": "/data/ckpt/llama-8b"})[1]
'llama-8b'
>>> read_config(42)
Traceback (most recent call last):
...
kvplan.errors.SpecError: from_hf_config takes a config.json dict, its path, or a model or Hugging Face cache folder; got int
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import SpecError

MAX_CONFIG_BYTES = 16 << 20  # config.json files are kilobytes; anything this large is not one


def read_config(source) -> tuple[Mapping, str | None]:
    """(the config dict, the model name it suggests or None)."""
    if isinstance(source, Mapping):
        return source, _name_of(source)
    if not isinstance(source, (str, os.PathLike)):
        raise SpecError(f"from_hf_config takes a config.json dict, its path, or a model or Hugging Face cache "
                        f"folder; got {type(source).__name__}")
    path = Path(source)
    folder_name = None
    if path.is_dir():
        path, folder_name = _config_in(path)
    config = _load(path)
    return config, _name_of(config) or folder_name or (path.parent.name or None)


def _config_in(folder: Path) -> tuple[Path, str]:
    """The config.json of a model folder, a cache folder or a snapshot, and its name."""
    if (folder / "config.json").is_file():
        cache = _cache_repo(folder.parent.parent) if folder.parent.name == "snapshots" else None
        return folder / "config.json", cache or folder.name
    repo = _cache_repo(folder)
    snapshots = folder / "snapshots"
    if repo is None or not snapshots.is_dir():
        raise SpecError(f"from_hf_config({str(folder)!r}): no config.json there, and it is not a Hugging Face "
                        f"cache folder (models--ORG--NAME with snapshots/)"[:300])
    ref = folder / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text().strip()
        if not (snapshots / revision / "config.json").is_file():
            raise SpecError(f"from_hf_config({str(folder)!r}): refs/main names revision {revision!r}, which has no "
                            f"snapshots/{revision}/config.json"[:300])
        return snapshots / revision / "config.json", repo
    found = sorted(p.parent.name for p in snapshots.glob("*/config.json"))
    if len(found) != 1:
        raise SpecError(f"from_hf_config({str(folder)!r}): no refs/main, and {len(found)} snapshots hold a "
                        f"config.json ({', '.join(found[:4]) or 'none'}); pass the snapshot folder"[:300])
    return snapshots / found[0] / "config.json", repo


def _cache_repo(folder: Path) -> str | None:
    """``ORG/NAME`` of a cache folder ``models--ORG--NAME`` (None for any other folder)."""
    parts = folder.name.split("--")
    return "/".join(parts[1:]) if len(parts) >= 2 and parts[0] == "models" and all(parts[1:]) else None


def _load(path: Path) -> Mapping:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise SpecError(f"from_hf_config({str(path)!r}): {path.stat().st_size:,} bytes is no config.json")
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"from_hf_config({str(path)!r}): cannot read it ({error.strerror or error})"[:300]) from None
    except UnicodeDecodeError:
        raise SpecError(f"from_hf_config({str(path)!r}): not a UTF-8 text file") from None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise SpecError(f"from_hf_config({str(path)!r}): not JSON ({error})"[:300]) from None
    if not isinstance(config, dict):
        raise SpecError(f"from_hf_config({str(path)!r}): a config.json holds an object, got "
                        f"{type(config).__name__}")
    return config


def _name_of(config: Mapping) -> str | None:
    """The name a config gives itself: ``_name_or_path``, a repo id kept whole, a local
    path cut to its last part."""
    given = config.get("_name_or_path")
    if not isinstance(given, str) or not given.strip():
        return None
    given = given.strip().rstrip("/")
    if given.startswith(("/", ".", "~")) or given.count("/") > 1 or "\\" in given:
        return given.replace("\\", "/").rsplit("/", 1)[-1] or None
    return given
