"""Command line: plan a transfer for a built-in model and print it.

    python -m kvplan plan --model llama-3.1-70b --src-tp 2 --dst-tp 8
    python -m kvplan plan --model deepseek-v3 --src-tp 8 --dst-tp 2 --rank 1 --verify
    python -m kvplan plan --hf-config ~/.cache/huggingface/hub/models--Qwen--Qwen3-8B --src-tp 1 --dst-tp 4 --json
    python -m kvplan models [--json]

docs/cli.md describes every flag.

Bad input (any `KvplanError`, and argparse's own usage errors) prints one line
``kvplan: error: ...`` to stderr and exits with status 2, the status argparse uses for
usage errors. Output cut short by its reader (``kvplan plan | head``) ends quietly.

>>> main(["plan", "--model", "qwen2.5-7b", "--src-tp", "1", "--dst-tp", "8", "--rank", "5",
...       "--request-tokens", "4096", "--bandwidth", "50"])    # doctest: +ELLIPSIS
ReadTable(dst_rank=5, rows=28, bytes=229376)
...
a 4,096-token request (scattered blocks, every block needed):
| decode rank | bytes | descriptors | local copies | local bytes | ms at 50 GB/s |
|---|---|---|---|---|---|
| 5 | 58,720,256 | 7,168 | 0 | 0 | 1.17 |
| all | 58,720,256 | 7,168 | 0 | 0 | 1.17 (in parallel) |
0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import attrs


from .api import plan
from .check import verify
from .errors import KvplanError
from .models import MODELS, from_hf_config, get_model, with_kv_dtype
from .planning import STRATEGIES
from .presets import vllm_engine
from .report import TRANSPORT_MODELS, compare_conv_strategies, conv_strategy_costs, plan_summary
from .spec import CONV_LAYOUTS, KV_LAYOUTS, KV_STORAGES, EngineSpec
from .spec.serial import model_document


class _UsageError(Exception):
    """An argparse usage error, raised instead of argparse printing the whole usage text."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors (bad choice, bad int, unknown option) come back as one line
    like kvplan's own; sub-command parsers are of this class too."""

    def error(self, message: str):
        raise _UsageError(message)


def _version() -> str:
    """The installed distribution's version (pyproject.toml holds the one number)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvplan")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kvplan", description="Plan KV-cache transfers between a prefill "
                                     "engine (P, source) and a decode engine (D, destination).")
    parser.add_argument("--version", action="version", version=f"kvplan {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="list the built-in models")
    models.add_argument("--json", action="store_true", help="as JSON (schema kvplan.models/1, docs/json.md)")
    p = commands.add_parser("plan", help="plan every decode rank's reads and print a summary")
    p.add_argument("--model", default=None, help=f"built-in model name (see `kvplan models`; default {DEFAULT_MODEL})")
    p.add_argument("--hf-config", default=None, metavar="PATH",
                   help="the model of both engines from a Hugging Face config: a config.json, a model folder, or "
                        "a Hugging Face cache folder (models--ORG--NAME or one of its snapshots)")
    p.add_argument("--src-config", default=None, metavar="PATH", help="the prefill engine's config (with --dst-config)")
    p.add_argument("--dst-config", default=None, metavar="PATH", help="the decode engine's config (with --src-config)")
    p.add_argument("--kv-dtype", default=None,
                   help="KV-cache dtype of both engines, as vLLM's --kv-cache-dtype: auto (the model's), fp8, "
                        "bfloat16, fp8_e5m2, ..., fp8_ds_mla / nvfp4_ds_mla (DeepSeek MLA)")
    for side, label, tp in (("src", "prefill", 1), ("dst", "decode", 2)):
        p.add_argument(f"--{side}-tp", type=int, default=tp, help=f"{label} tensor-parallel size (default {tp})")
        p.add_argument(f"--{side}-pp", type=int, default=1, help=f"{label} pipeline stages (default 1)")
        p.add_argument(f"--{side}-block", type=int, default=None,
                       help=f"{label} logical block, tokens (default 16; with --vllm: vLLM's --block-size)")
        p.add_argument(f"--{side}-kernel-block", type=int, default=None,
                       help=f"{label} kernel block, tokens (default: the logical block)")
        p.add_argument(f"--{side}-layout", default="HND", choices=KV_LAYOUTS, help=f"{label} kernel page order")
        p.add_argument(f"--{side}-storage", default="packed", choices=KV_STORAGES, help=f"{label} K/V storage")
        p.add_argument(f"--{side}-conv-layout", default="DS", choices=CONV_LAYOUTS, help=f"{label} conv state order")
    p.add_argument("--vllm", action="store_true",
                   help="lay out both engines as vLLM 0.33 would (hybrid block sizes, kernel blocks, HMA pools)")
    p.add_argument("--backend", default=None, help="vLLM attention backend for --vllm (default flashinfer)")
    p.add_argument("--spec-tokens", type=int, default=0, help="speculative tokens (extra conv rows), both engines")
    p.add_argument("--conv-strategy", default="direct", choices=STRATEGIES,
                   help="how conv state crosses a TP change (default direct)")
    p.add_argument("--transfer-strategy", default="auto", choices=("auto", "direct", "bounce"),
                   help="direct reads, or bounce (pack, few large copies, unpack); auto: the one predicted "
                        "faster on --transport (direct without one)")
    p.add_argument("--transport", default=None, choices=("nixl", "ucx", "cupy", "host"),
                   help="the transport the plan is for: auto chooses by it, and the predicted time is printed")
    p.add_argument("--costs", action="store_true", help="also compare the conv strategies' costs")
    p.add_argument("--rank", type=int, default=None, help="print only this decode rank's read table")
    p.add_argument("--request-tokens", type=int, default=None, metavar="N",
                   help="also print what one request of N tokens moves: bytes, descriptors, local copies per "
                        "decode rank")
    p.add_argument("--bandwidth", type=float, default=None, metavar="GB/s",
                   help="with --request-tokens: the time of those bytes at this link rate (10^9 B/s)")
    p.add_argument("--svg", default=None, metavar="PATH",
                   help="draw the reads of decode rank --rank (default 0) as an SVG picture into PATH")
    p.add_argument("--verify", action="store_true", help="check every byte with the identity simulation")
    p.add_argument("--json", action="store_true",
                   help="JSON summary (schema kvplan.plan-summary/1, docs/json.md) instead of text")
    p.add_argument("--rows", action="store_true", help="with --json: the whole plan document too (kvplan.plan/1)")
    return parser


DEFAULT_MODEL = "llama-3.1-8b"

# what --vllm builds on each side, which these flags could not change
_VLLM_FIXED = (("layout", "HND"), ("storage", "packed"), ("conv_layout", "DS"), ("kernel_block", None))


def _models(args) -> tuple:
    """The prefill and decode models: a built-in one for both, one config for both, or
    one config per engine; then the KV-cache dtype."""
    configs = {"--hf-config": args.hf_config, "--src-config": args.src_config, "--dst-config": args.dst_config}
    given = [flag for flag, value in configs.items() if value is not None]
    if args.model is not None and given:
        raise _UsageError(f"--model {args.model} and {given[0]} both name the model; give one")
    if args.hf_config is not None and len(given) > 1:
        raise _UsageError(f"--hf-config sets both engines' model; {given[1]} would set one again")
    if len(given) == 1 and args.hf_config is None:
        missing = "--dst-config" if given[0] == "--src-config" else "--src-config"
        raise _UsageError(f"{given[0]} needs {missing} (or one --hf-config for both engines)")
    if given:
        src = from_hf_config(args.src_config or args.hf_config)
        dst = src if args.hf_config is not None else from_hf_config(args.dst_config)
    else:
        src = dst = get_model(args.model or DEFAULT_MODEL)
    if args.kv_dtype is not None:
        src, dst = with_kv_dtype(src, args.kv_dtype), with_kv_dtype(dst, args.kv_dtype)
    return src, dst


def _refuse_ignored(args, model) -> None:
    """Every flag takes effect or is refused: none is silently dropped."""
    if args.vllm:
        for side in ("src", "dst"):
            for name, fixed in _VLLM_FIXED:
                value = getattr(args, f"{side}_{name}")
                if value != fixed:
                    flag = f"--{side}-{name.replace('_', '-')}"
                    raise _UsageError(f"{flag} {value}: --vllm lays the engines out as vLLM 0.33 does "
                                      f"({'kernel blocks chosen by the backend' if fixed is None else fixed}); "
                                      f"drop {flag} or --vllm")
    elif args.backend is not None:
        raise _UsageError(f"--backend {args.backend} chooses vLLM's attention backend: it needs --vllm")
    if args.rows and not args.json:
        raise _UsageError("--rows adds the plan's rows to the JSON output: it needs --json")
    if args.bandwidth is not None and args.request_tokens is None:
        raise _UsageError(f"--bandwidth {args.bandwidth:g} times a request: it needs --request-tokens")
    states = [layer for layer in model.layers if not layer.holds_tokens]
    if not states and args.spec_tokens:
        raise _UsageError(f"--spec-tokens {args.spec_tokens} adds conv-state rows; {model.name} has no state layers")
    if not states and args.conv_strategy != "direct":
        raise _UsageError(f"--conv-strategy {args.conv_strategy} moves conv state; {model.name} has no state layers")


def _engine(args, side: str, model) -> EngineSpec:
    if args.vllm:
        return vllm_engine(model, getattr(args, f"{side}_tp"), backend=args.backend or "flashinfer",
                           pp=getattr(args, f"{side}_pp"),
                           block_size=getattr(args, f"{side}_block"), num_speculative_tokens=args.spec_tokens)
    block = getattr(args, f"{side}_block")
    return EngineSpec(model=model, tp=getattr(args, f"{side}_tp"), pp=getattr(args, f"{side}_pp"),
                      block_tokens=16 if block is None else block,
                      kernel_block_tokens=getattr(args, f"{side}_kernel_block"),
                      kv_layout=getattr(args, f"{side}_layout"), kv_storage=getattr(args, f"{side}_storage"),
                      conv_layout=getattr(args, f"{side}_conv_layout"), num_speculative_tokens=args.spec_tokens)


def _plan_command(args) -> None:
    model, dst_model = _models(args)
    _refuse_ignored(args, model)
    src, dst = _engine(args, "src", model), _engine(args, "dst", dst_model)
    p = plan(src, dst, conv_strategy=args.conv_strategy, transfer_strategy=args.transfer_strategy,
             transport=args.transport)
    tables = p.tables if args.rank is None else (p.reads(dst_rank=args.rank),)
    report = verify(p) if args.verify else None  # raises PlanError (exit 2) on any wrong byte
    request = None if args.request_tokens is None else p.cost(args.rank, request_tokens=args.request_tokens)
    # a SpecError here, before any output, for a bandwidth that is not a positive number
    seconds = None if request is None or args.bandwidth is None else request.seconds(args.bandwidth)
    estimate = p.estimate(args.transport, dst_rank=args.rank or 0) if args.transport in TRANSPORT_MODELS else None
    if args.svg is not None:
        _write(args.svg, p.picture(args.rank or 0, request_tokens=args.request_tokens or 4096))
    if args.json:
        out = plan_summary(p, dst_rank=args.rank, request_tokens=args.request_tokens, rows=args.rows)
        out["verified"] = bool(args.verify)
        if seconds is not None:
            out["request"]["bandwidth_GBps"] = args.bandwidth
            out["request"]["seconds"] = seconds
        if estimate is not None:
            out["estimate"] = attrs.asdict(estimate)
        if args.costs:
            out["costs"] = [attrs.asdict(cost) for cost in conv_strategy_costs(src, dst, args.rank)]
        print(json.dumps(out, indent=1, sort_keys=True))
        return
    print(p.describe() if args.rank is None else str(tables[0]))
    if estimate is not None:
        e = estimate
        print(f"\n{p.transfer_strategy} on {args.transport} (predicted, a {e.request_tokens:,}-token request, decode "
              f"rank {args.rank or 0}): direct {e.direct_copies:,} copies {1e3 * e.direct_s:.2f} ms, bounce "
              f"{e.bounce_copies:,} copies {1e3 * e.bounce_s:.2f} ms, {e.bytes:,} B")
    if request is not None:
        print(f"\na {request.request_tokens:,}-token request (scattered blocks, every block needed):")
        print(request.table(args.bandwidth))
    if args.costs:  # the ranks --json counts too: all, or R's with --rank
        ranks = "all decode ranks" if args.rank is None else f"decode rank {args.rank}"
        print(f"\nper span of a token group and per block of a state group, {ranks}:")
        print(compare_conv_strategies(src, dst, args.rank))
    if report is not None:
        print(report)


def _write(path: str, text: str) -> None:
    """Write a picture; a path that cannot be written is a usage error, not a traceback."""
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as error:
        raise _UsageError(f"--svg {path}: cannot write it ({error.strerror or error})") from None


def _model_row(name: str, model) -> str:
    """One line of `kvplan models`; layers of any kind (hybrids list their state layers)."""
    token = [layer for layer in model.layers if layer.holds_tokens]
    shapes = list(dict.fromkeys(f"{layer.num_kv_heads} x {layer.head_dim}" for layer in token))
    per_token = sorted({layer.bytes_per_token for layer in token})
    notes = []
    if any(layer.mla for layer in token):
        notes.append(f"MLA latent {token[0].head_dim}, replicated on every rank")
    windows = [layer.sliding_window for layer in token if layer.sliding_window]
    if windows:
        notes.append(f"{len(windows)} sliding (window {max(windows)}) + {len(token) - len(windows)} global layers")
    kinds = Counter(layer.kind for layer in model.layers if not layer.holds_tokens)
    notes += [f"{count} {kind} layers" for kind, count in kinds.items()]
    return (f"{name:<24} {model.num_layers:>6}  {' / '.join(shapes) or '-':<18} "
            f"{' / '.join(map(str, per_token)) or '-':>13}  {'; '.join(notes)}").rstrip()


def _models_command(as_json: bool = False) -> None:
    if as_json:  # schema kvplan.models/1: each model as an engine document's model object
        print(json.dumps({"schema": "kvplan.models/1",
                          "models": [model_document(MODELS[name]) for name in sorted(MODELS)]}, sort_keys=True))
        return
    print(f"{'name':<24} {'layers':>6}  {'kv heads x dim':<18} {'B/token/layer':>13}  notes")
    for name in sorted(MODELS):
        print(_model_row(name, MODELS[name]))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    >>> main(["models"])  # doctest: +NORMALIZE_WHITESPACE
    name                     layers  kv heads x dim     B/token/layer  notes
    deepseek-v3                  61  1 x 576                     1152  MLA latent 576, replicated on every rank
    falcon-h1-7b                 88  2 x 128                     1024  44 mamba2 layers
    gemma-3-27b                  62  16 x 128                    8192  52 sliding (window 1024) + 10 global layers
    gemma-4-31b                  60  16 x 256 / 4 x 512  8192 / 16384  50 sliding (window 1024) + 10 global layers
    granite-4.0-h-small          40  8 x 128                     4096  36 mamba2 layers
    jamba-v0.1                   32  8 x 128                     4096  28 mamba1 layers
    llama-3.1-70b                80  8 x 128                     4096
    llama-3.1-8b                 32  8 x 128                     4096
    mistral-7b                   32  8 x 128                     4096
    nemotron-3-nano-30b-a3b      29  2 x 128                     1024  23 mamba2 layers
    qwen2.5-7b                   28  4 x 128                     2048
    qwen3-next-80b-a3b           48  2 x 256                     2048  36 gdn layers
    0
    >>> main(["plan", "--model", "llama-3.1-8b", "--src-tp", "8", "--dst-tp", "3"])
    2
    >>> main(["plan", "--src-tp", "two"])     # argparse's errors too: one line on stderr, status 2
    2
    """
    try:
        if argv is not None and not (isinstance(argv, (list, tuple)) and all(isinstance(a, str) for a in argv)):
            raise _UsageError(f"arguments must be a list of strings, got {argv!r}"[:300])
        args = _parser().parse_args(argv)
        if args.command == "models":
            _models_command(args.json)
        else:
            _plan_command(args)
    except (KvplanError, _UsageError) as exc:
        # one line: PlanError lists its defects on further lines
        print(f"kvplan: error: {' | '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except SystemExit as done:  # --help, after printing it
        return done.code if isinstance(done.code, int) else 0
    return 0


def _quiet_stdout() -> None:
    """The reader closed stdout (``| head``): point it at /dev/null, so the interpreter's
    final flush does not fail again with a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind sys.stdout (tests)
        pass
