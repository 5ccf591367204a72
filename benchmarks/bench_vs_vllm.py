"""Per-request CPU cost of kvplan's lowering next to vLLM 0.33's own NIXL pull path.

    python3 benchmarks/bench_vs_vllm.py [--repeats 7] [--json PATH]

Optional: without an importable vLLM it prints one line and exits 0. CPU only (no GPU, no
NIXL); it sets VLLM_SSM_CONV_STATE_LAYOUT=DS itself (vLLM's NIXL Mamba path needs it)::

    python3 -m venv vllmenv && . vllmenv/bin/activate
    pip install torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl   # a CPU torch wheel
    pip install --no-deps vllm==0.33.0
    pip install numpy packaging regex pyzmq msgspec pydantic cachetools psutil pyyaml \
        cloudpickle urllib3 transformers cbor2 aiohttp requests openai_harmony openai pillow \
        pybase64 uvloop py-cpuinfo prometheus_client fastapi partial_json_parser llguidance
    pip install --no-deps xgrammar apache-tvm-ffi einops   # with deps they pull CUDA torch
    pip install -e .

Decode rank 0, one request of random block ids (``default_rng(0)``, a permutation of each
side's pool), the same Python lists for both libraries (what vLLM's scheduler hands over):

* vLLM: `NixlPullConnectorWorker` built as vLLM's unit tests build it (``object.__new__``
  and the attributes its methods read), `StubNixl` standing in for the NIXL agent. The
  fields `register_kv_caches` derives from the cache tensors are set for what vLLM 0.33
  allocates (one LBHNC region per attention layer, K|V packed; for Nemotron six pooled
  tensors shared by five HMA groups, Mamba pages in DS conv layout); vLLM's own
  `register_local_xfer_handler` and `add_remote_agent` then build every descriptor list.
  *full ms*: the decode worker's per-request work: `_logical_to_kernel_block_ids` on the
  local ids (`start_load_kv`'s step), then `_read_blocks_for_req` (remote id conversion,
  prefix trim, two `_compute_desc_ids` calls per source rank, stubbed `make_prepped_xfer`
  and `transfer`). *_compute_desc_ids ms*: those calls alone, replayed with the
  arguments recorded from a real `_read_blocks`.
* kvplan: `plan(P, D)` of the `vllm_engine` engines, built once; *lower() ms* is
  `plan.lower(0, src, dst)`, the coalesced `Transfer` in its compact form (one layer's
  copies and a region id per layer; *B / copy held* is `held_bytes` over its copies);
  *lower + columns ms* adds reading its columns (`Transfer.columns()`, six int64 arrays,
  what a consumer of rows pays); *indices ms* is
  `PreparedLists.indices`, the NIXL index path (lists built once).

Thread CPU time (`time.thread_time`), medians of `--repeats` after one untimed call each,
the five calls interleaved with their order alternated every repeat, building a request's
metadata and freeing results untimed, and glibc told to keep freed memory
(`keep_freed_memory` says why).

Same memory: both sides bind the same base addresses, and vLLM's reads (its registered
lists indexed by the ids it hands `make_prepped_xfer`) are compared with kvplan's rows,
both merged alike (ranges contiguous on both sides joined); *same bytes* says whether
they match, else a note says what only one side copies. Known difference, Nemotron: one
of its four Mamba groups has five layers for six pooled tensors (HMA pads it); vLLM's
`_compute_desc_ids` reads every SSM region for every SSM group, so it also copies that
group's block in the sixth tensor, which no layer owns (4 descriptors, one Mamba page
per source rank and request); kvplan copies only pages a layer owns.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kvplan import engine_memory, plan, vllm_engine  # noqa: E402
from kvplan.lowering import prepared_lists  # noqa: E402
from kvplan.models import HYBRID_MODELS  # noqa: E402
from bench_plan import keep_freed_memory  # noqa: E402  (glibc keeps freed memory: its docstring says why)

DENSE = "llama-3.1-70b"
HYBRID = "nemotron-3-nano-30b-a3b"
# (model, prefill TP, decode TP, request blocks, pool blocks per engine)
CASES = [(DENSE, s, d, n, 65536) for s, d in ((1, 1), (2, 8), (8, 2)) for n in (4096, 65536)] + \
        [(HYBRID, 1, 2, 64, 1024), (HYBRID, 2, 1, 64, 1024)]


def import_vllm():
    """vLLM's NIXL worker pieces, or None when vLLM cannot be imported."""
    os.environ.setdefault("VLLM_SSM_CONV_STATE_LAYOUT", "DS")  # the NIXL Mamba path requires it
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import torch
        import vllm
        from vllm.distributed.kv_transfer.kv_connector import utils
        from vllm.distributed.kv_transfer.kv_connector.v1 import ssm_conv_transfer_utils as conv
        from vllm.distributed.kv_transfer.kv_connector.v1.nixl import metadata, pull_worker
        from vllm.v1 import kv_cache_interface as kv
        from vllm.v1.attention.backends.registry import MambaAttentionBackendEnum
    except Exception as exc:  # noqa: BLE001 - any import failure means "no vLLM here"
        return None, f"{type(exc).__name__}: {exc}"
    return SimpleNamespace(torch=torch, version=vllm.__version__, metadata=metadata, kv=kv,
                           TransferTopology=utils.TransferTopology, Worker=pull_worker.NixlPullConnectorWorker,
                           derive_mamba_conv_split=conv.derive_mamba_conv_split,
                           MAMBA2=MambaAttentionBackendEnum.MAMBA2), None


class StubNixl:
    """Stands in for the NIXL agent: keeps the descriptor lists and reads it is handed,
    so the comparison can resolve every descriptor id to bytes; moves nothing."""

    def __init__(self):
        self.dlists, self.reads = [], []

    def prep_xfer_dlist(self, agent, descs, mem_type=None, **_):
        self.dlists.append(np.asarray(descs, np.uint64))
        return len(self.dlists) - 1

    def make_prepped_xfer(self, op, local, local_ids, remote, remote_ids, notif_msg=None, **_):
        self.reads.append((local, local_ids, remote, remote_ids))
        return len(self.reads)

    def add_remote_agent(self, agent_metadata):
        return f"agent-{len(self.dlists)}"

    def transfer(self, handle):
        return "PROC"


def _raise(**kw):
    raise kw["error"]  # a failed read must fail the benchmark, not be logged and skipped


def vllm_worker(v, engine, remote, src_bases, dst_bases):
    """A decode-rank-0 `NixlPullConnectorWorker` for `engine`, handshaken with `remote`.

    The fields set by hand are the ones `__init__` and `register_kv_caches` would derive
    for this engine's tensors (region list, block lengths, groups); the descriptor lists
    come from vLLM's own registration methods.
    """
    torch, m, hybrid, tp, n = v.torch, engine.model, engine.pooled, engine.tp, engine.num_blocks
    attn, mamba = next(s for s in m.layers if s.holds_tokens), next((s for s in m.layers if not s.holds_tokens), None)
    kernel = engine.kernel_block_tokens
    ratio = engine.block_tokens // kernel  # physical (kernel) blocks per logical block
    fa = v.kv.FullAttentionSpec(block_size=engine.block_tokens, num_kv_heads=max(1, attn.num_kv_heads // tp),
                             head_size=attn.head_dim, dtype=torch.bfloat16)

    def mamba_spec(t, padded=None):  # Mamba2 (Nemotron's), DS conv state: (conv dim, kernel - 1)
        conv = (mamba.num_heads * mamba.head_dim + 2 * mamba.n_groups * mamba.d_state) // t
        return v.kv.MambaSpec(block_size=engine.block_tokens, shapes=((conv, mamba.conv_kernel - 1), (
            mamba.num_heads // t, mamba.head_dim, mamba.d_state)), dtypes=(torch.bfloat16, torch.float32),
            page_size_padded=padded, mamba_type=v.MAMBA2)

    w = object.__new__(v.Worker)
    if hybrid:
        ms, groups = mamba_spec(tp, engine.page_bytes), []
        for g in engine.layer_groups:
            names = [f"layers.{i}" for i in g.layers if i is not None]
            groups.append(v.kv.KVCacheGroupSpec(layer_names=names, kv_cache_spec=fa if engine.group_is_token(
                len(groups)) else ms))
        w._conv_decomp = v.derive_mamba_conv_split(ms, tp)
        regions = len(engine.layer_groups[0].layers)  # one pooled tensor per slot of a group
        page = engine.page_bytes // ratio  # a kernel block's share of the pooled page
        region_groups = [-1] * regions  # each tensor is shared by several groups
        w._ssm_region_indices = list(range(regions))  # each holds some Mamba layer
    else:
        groups = [v.kv.KVCacheGroupSpec(layer_names=[f"layers.{i}" for i in range(m.num_layers)], kv_cache_spec=fa)]
        w._conv_decomp, w._ssm_region_indices = None, []
        regions, page, region_groups = m.num_layers, fa.page_size_bytes, [0] * m.num_layers
    w._mamba_ssm_size = w._conv_decomp.ssm_sizes if hybrid else (0, 0)
    w.kv_cache_config = v.kv.KVCacheConfig(num_blocks=n, kv_cache_tensors=[], kv_cache_groups=groups)
    w._layer_specs = {name: g.kv_cache_spec for g in groups for name in g.layer_names}
    w._group_spec_types = tuple(type(g.kv_cache_spec) for g in groups)
    w._has_mamba = w._is_hma_required = hybrid
    w.engine_id, w.tp_rank, w.world_size, w.pp_size = "decode", 0, tp, 1
    w.dcp_size, w.dcp_rank, w.pcp_size, w.pcp_rank, w.use_mla = 1, 0, 1, 0, False
    w.block_size, w._physical_blocks_per_logical_kv_block = kernel, ratio  # _sync_block_size_with_kernel
    w.num_blocks, w._logical_num_blocks = n * ratio, n
    w.nixl_wrapper, w.nixl_memory_type, w.device_id = StubNixl(), "VRAM", 0
    w.use_host_buffer, w.kv_cache_layout, w.backend_name = False, "LBHNC", "FLASH_ATTN"
    w._is_csa_linear, w._ple_group_index, w._ple_region_index, w._ple_block_len = False, None, None, None
    w.vllm_config = SimpleNamespace(cache_config=SimpleNamespace(enable_prefix_caching=False))
    w.transfer_topo = v.TransferTopology(tp_rank=0, tp_size=tp, block_size=kernel, engine_id="decode",
                                         is_mla=False, is_mamba=hybrid, total_num_kv_heads=attn.num_kv_heads,
                                         attn_backends=[], dcp_size=1)
    # what register_kv_caches records per region
    w.block_len_per_layer, w.block_stride_per_layer = [page] * regions, [page] * regions
    w.region_num_blocks, w.region_group_ids = [n * ratio] * regions, region_groups
    w.region_names, w.region_mem_types, w._region_is_mla = [], ["VRAM"] * regions, [False] * regions
    w.num_regions, w.num_descs = regions, regions * n * ratio
    w._uses_region_group_mapping = len(set(region_groups)) > 1
    w._mixed_mem_types = w._skip_dram_xfer = False
    w._scratch_region_indices, w.region_members, w._packed_member_layouts = [], [], {}
    w._transfer_layer_names = w._transfer_layer_region_indices = w._transfer_layer_group_ids = ()
    w._head_sharded_draft_regions, w._head_sharded_draft_kv_heads = set(), None
    w.kv_caches_base_addr = defaultdict(dict, {"decode": {0: dst_bases}})
    w.dst_num_blocks, w.dst_region_num_blocks = {"decode": n * ratio}, {"decode": w.region_num_blocks}
    w.dst_region_group_ids, w.dst_region_mem_types = {"decode": region_groups}, {"decode": w.region_mem_types}
    w.dst_uses_region_group_mapping = {"decode": w._uses_region_group_mapping}
    w.src_xfer_handles_by_block_size, w.src_blocks_data_by_block_size = {}, {}
    w.src_xfer_handles_by_tp_ratio, w._dram_src_handles_by_tp_ratio = {}, {}
    w.dst_xfer_side_handles, w._remote_agents = defaultdict(dict), defaultdict(dict)
    w.tp_mappings, w.draft_tp_mappings = {}, {}
    # per-request state _read_blocks_for_req touches
    w._invalid_remote_engines, w._remote_registration_generations = set(), {}
    w._engine_last_active, w._bidirectional_kv_xfer_enabled = {}, False
    w._recving_transfers, w._recving_metadata, w._log_failure = defaultdict(list), {}, _raise

    handle, w.src_blocks_data = w.register_local_xfer_handler(kernel)  # last step of register_kv_caches
    w.src_xfer_handles_by_block_size[kernel] = handle
    r_ratio, r_blocks = remote.block_tokens // remote.kernel_block_tokens, remote.num_blocks
    if hybrid:
        r_page, ssm_sizes = remote.page_bytes // r_ratio, v.derive_mamba_conv_split(mamba_spec(remote.tp),
                                                                                     remote.tp).ssm_sizes
    else:  # [H, N, K|V] bf16 per layer and kernel block
        r_heads = max(1, attn.num_kv_heads // remote.tp)
        r_page, ssm_sizes = r_heads * remote.kernel_block_tokens * 4 * attn.head_dim, (0, 0)
    for rank in w.transfer_topo.handshake_target_ranks(remote.tp):
        meta = v.metadata.NixlAgentMetadata(
            engine_id="prefill", agent_metadata=b"", kv_caches_base_addr=src_bases[rank], device_id=rank,
            num_blocks=r_blocks * r_ratio, block_lens=[r_page] * regions, block_strides=[r_page] * regions,
            kv_cache_layout="LBHNC", block_size=remote.kernel_block_tokens, ssm_sizes=ssm_sizes,
            attn_backend_name="FLASH_ATTN", physical_blocks_per_logical_kv_block=r_ratio,
            region_num_blocks=[r_blocks * r_ratio] * regions, region_group_ids=region_groups)
        w._remote_agents["prefill"][(0, rank)] = w.add_remote_agent(meta, rank, remote.tp)
    return w


def request_meta(v, w, src, dst):
    """The `ReqMeta` the scheduler hands the decode worker for one request."""
    remote = v.metadata.RemoteMeta(block_ids=src, host="", port=0, engine_id="prefill", request_id="r")
    return v.metadata.ReqMeta(local_block_ids=dst, local_physical_block_ids=[], tp_size=w.world_size, remote=remote)


def vllm_read(w, meta):
    meta.local_physical_block_ids = w._logical_to_kernel_block_ids(meta.local_block_ids,
                                                                   w._physical_blocks_per_logical_kv_block)
    w._read_blocks_for_req("req", meta)


def record_desc_calls(v, w, src, dst) -> list[dict]:
    """The keyword arguments of every `_compute_desc_ids` call of one request."""
    calls, real = [], w._compute_desc_ids
    w._compute_desc_ids = lambda **kw: calls.append(kw) or real(**kw)
    try:
        vllm_read(w, request_meta(v, w, src, dst))
    finally:
        del w._compute_desc_ids
    return calls


def flat(dlist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of every entry of a strided Nx5 (addr, len, dev, stride, count) list."""
    count = dlist[:, 4].astype(np.int64)
    first = np.repeat(np.cumsum(count) - count, count)
    step = np.arange(count.sum(), dtype=np.uint64) - first.astype(np.uint64)
    return np.repeat(dlist[:, 0], count) + step * np.repeat(dlist[:, 3], count), np.repeat(dlist[:, 1], count)


def merged(rank, src, dst, nbytes) -> np.ndarray:
    """Copies as rows (rank, src, dst, nbytes), sorted, neighbours contiguous on both sides joined."""
    rank, src, dst, nbytes = (np.asarray(a, np.uint64) for a in (rank, src, dst, nbytes))
    order = np.lexsort((src, dst, rank))
    rank, src, dst, nbytes = rank[order], src[order], dst[order], nbytes[order]
    cont = (rank[1:] == rank[:-1]) & (src[:-1] + nbytes[:-1] == src[1:]) & (dst[:-1] + nbytes[:-1] == dst[1:])
    start = np.flatnonzero(np.concatenate(([True], ~cont)))
    sizes = np.add.reduceat(nbytes, start) if len(start) else nbytes
    return np.stack([rank[start], src[start], dst[start], sizes], axis=1)


def vllm_copies(w) -> np.ndarray:
    """vLLM's reads of the last request as (rank, src, dst, nbytes) rows."""
    stub, out = w.nixl_wrapper, []
    rank_of = {h: r for r, h in w.dst_xfer_side_handles["prefill"].items()}
    for local, local_ids, remote, remote_ids in stub.reads:
        la, ll = flat(stub.dlists[local])
        ra, rl = flat(stub.dlists[remote])
        lids, rids = np.asarray(local_ids), np.asarray(remote_ids)
        assert (ll[lids] == rl[rids]).all(), "a NIXL read pairs descriptors of different lengths"
        out.append(np.stack([np.full(len(lids), rank_of[remote], np.uint64), ra[rids], la[lids], ll[lids]], 1))
    return np.concatenate(out)


def compare(vllm_rows: np.ndarray, t, src_bases, dst_bases) -> tuple[bool, str]:
    """Whether vLLM's reads and kvplan's Transfer copy the same bytes; else what differs."""
    sa, da = t.bind({r: src_bases[r] for r in t.source_ranks}, dst_bases)
    a = merged(*vllm_rows.T)
    b = merged(t.src_rank, sa, da, t.nbytes)
    if a.shape == b.shape and (a == b).all():
        return True, ""
    rows = lambda x: np.ascontiguousarray(x).view([("", np.uint64)] * 4).ravel()  # noqa: E731
    parts = []
    for who, mine, other in (("vLLM", a, b), ("kvplan", b, a)):
        only = mine[~np.isin(rows(mine), rows(other))]
        regions = sorted(set((((only[:, 2] >> 36) & 255) - 1).tolist()))  # decode regions (see `bases`)
        parts.append(f"{who}-only {len(only)} ranges / {int(only[:, 3].sum()):,} B"
                     + (f" in decode region(s) {regions}" if len(only) else ""))
    return False, ", ".join(parts)


def bases(engine, side: int) -> dict[int, list[int]]:
    """Base addresses per rank and region, the same for both libraries: region i of rank r
    at ``((side * 16 + r + 1) << 44) + ((i + 1) << 36)`` (regions here are under 64 GiB)."""
    regions = len(engine_memory(engine).regions)
    return {r: [((side * 16 + r + 1) << 44) + ((i + 1) << 36) for i in range(regions)] for r in range(engine.tp)}


def request_ids(dst, blocks: int, pool: int) -> tuple[list, list]:
    """(prefill, decode) block ids of one request, one list per group, from a permutation
    of each side's pool (seed 0): `blocks` for a token group, one running state block for
    a state group (what vLLM hands over for Mamba)."""
    rng = np.random.default_rng(0)
    sizes = [blocks if dst.group_is_token(g) else 1 for g in range(len(dst.layer_groups))]
    cuts = np.cumsum([0, *sizes])
    return tuple([perm[a:b].tolist() for a, b in zip(cuts[:-1], cuts[1:])]
                 for perm in (rng.permutation(pool), rng.permutation(pool)))


def timed(setup, fn) -> float:
    """Thread CPU ms of ``fn(setup())``; setup, collection and freeing the result untimed."""
    arg = setup()
    gc.collect()
    start = time.thread_time()
    out = fn(arg)
    elapsed = time.thread_time() - start
    del out  # after the clock is read: freeing the result is not the call's cost
    return elapsed * 1e3


def run_case(v, model, src_tp, dst_tp, blocks, pool, repeats) -> dict:
    spec = HYBRID_MODELS[model] if model in HYBRID_MODELS else model
    src, dst = vllm_engine(spec, src_tp, num_blocks=pool), vllm_engine(spec, dst_tp, num_blocks=pool)
    src_bases, dst_bases = bases(src, 1), bases(dst, 2)[0]
    w = vllm_worker(v, dst, src, src_bases, dst_bases)
    p = plan(src, dst)
    lists = prepared_lists(p, 0)
    s_ids, d_ids = request_ids(dst, blocks, pool)
    # a dense engine takes one flat list per request; vLLM always gets one list per group
    ks, kd = (s_ids, d_ids) if dst.pooled else (s_ids[0], d_ids[0])
    calls = record_desc_calls(v, w, s_ids, d_ids)

    def fresh_meta():
        w.nixl_wrapper.reads.clear()
        w._recving_transfers.clear()
        return request_meta(v, w, s_ids, d_ids)

    fns = {
        "vllm_full": (fresh_meta, lambda meta: vllm_read(w, meta)),
        "kvplan_lower": (lambda: None, lambda _: p.lower(0, ks, kd)),
        "kvplan_columns": (lambda: None, lambda _: p.lower(0, ks, kd).columns()),
        "vllm_desc": (lambda: None, lambda _: [w._compute_desc_ids(**kw) for kw in calls]),
        "kvplan_indices": (lambda: None, lambda _: lists.indices(p, ks, kd)),
    }
    for setup, fn in fns.values():  # warm-up
        timed(setup, fn)
    times = {k: [] for k in fns}
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            times[k].append(timed(*fns[k]))
    # what each side describes (vLLM's last recorded request vs a fresh Transfer)
    timed(*fns["vllm_full"])
    vrows = vllm_copies(w)
    t = p.lower(0, ks, kd)
    held_per_copy = t.held_bytes / max(len(t), 1)  # compact, before a column is read
    same, note = compare(vrows, t, src_bases, dst_bases)
    med = {k: statistics.median(x) for k, x in times.items()}
    return {"case": f"{model} {src_tp}→{dst_tp}", "blocks": blocks, "pool_blocks": pool,
            "state_blocks": sum(len(ids) for g, ids in enumerate(d_ids) if not dst.group_is_token(g)),
            "kvplan_rows": len(t), "vllm_descriptors": int(len(vrows)), "same_bytes": same, "note": note,
            "vllm_full_ms": med["vllm_full"], "kvplan_lower_ms": med["kvplan_lower"],
            "lower_ratio": med["kvplan_lower"] / med["vllm_full"], "kvplan_columns_ms": med["kvplan_columns"],
            "columns_ratio": med["kvplan_columns"] / med["vllm_full"], "held_bytes_per_copy": held_per_copy,
            "vllm_desc_ms": med["vllm_desc"],
            "kvplan_indices_ms": med["kvplan_indices"], "indices_ratio": med["kvplan_indices"] / med["vllm_desc"],
            "repeats": repeats, "samples_ms": times}


def table(results: list[dict]) -> str:
    lines = ["| case | blocks | kvplan rows | vLLM descs | same bytes | vLLM full ms | kvplan lower() ms | "
             "lower / vLLM | B / copy held | lower + columns ms | (lower + columns) / vLLM | "
             "vLLM _compute_desc_ids ms | kvplan indices ms | indices / desc_ids |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        blocks = f"{r['blocks']:,}" + (f" + {r['state_blocks']} state" if r["state_blocks"] else "")
        lines.append(f"| {r['case']} | {blocks} | {r['kvplan_rows']:,} | {r['vllm_descriptors']:,} | "
                     f"{'yes' if r['same_bytes'] else 'no¹'} | {r['vllm_full_ms']:.2f} | {r['kvplan_lower_ms']:.2f} | "
                     f"{r['lower_ratio']:.2f}× | {r['held_bytes_per_copy']:.3g} | {r['kvplan_columns_ms']:.2f} | "
                     f"{r['columns_ratio']:.2f}× | {r['vllm_desc_ms']:.2f} | {r['kvplan_indices_ms']:.2f} | "
                     f"{r['indices_ratio']:.2f}× |")
    notes = [f"¹ {r['case']}: {r['note']}" for r in results if not r["same_bytes"]]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the rows (with every sample) here")
    parser.add_argument("--only", help="run only cases whose name contains this")
    parser.add_argument("--system-malloc", action="store_true", help="glibc defaults (page faults count)")
    args = parser.parse_args(argv)
    v, why = import_vllm()
    if v is None:
        print(f"bench_vs_vllm: skipped, vLLM is not importable ({why})")
        return 0
    steady = not args.system_malloc and keep_freed_memory()
    results = []
    for case in CASES:
        name = f"{case[0]} {case[1]}→{case[2]} {case[3]}"
        if args.only and args.only not in name:
            continue
        results.append(run_case(v, *case, repeats=args.repeats))
        print(f"done: {name}", file=sys.stderr)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"vllm": v.version, "timer": "time.thread_time",
                                         "malloc": "keeps freed memory" if steady else "system default",
                                         "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
