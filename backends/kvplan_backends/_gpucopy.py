"""One CUDA kernel launch that copies many byte ranges (CuPy RawKernel), and one that
digests them (integrity mode).

Each thread block copies one range (ranges longer than `PIECE_BYTES` are cut first by
`kvplan.lowering.split_ranges`, so large runs spread over many blocks). Inside a
range: a byte head up to the destination's 16-byte boundary, then 16-byte vector
loads four at a time when the source is equally aligned, then a byte tail; ranges
whose source and destination disagree modulo 16 take the byte path. Launched on the
destination's device it reads peer memory over NVLink (peer access enabled first).

`digest_ranges` evaluates `kvplan.lowering.range_digests`' formula in one launch:
ranges are cut into `DIGEST_PIECE_BYTES` pieces (`digest_pieces`), each thread block
sums ``mix(256 * position + byte)`` over a piece, warps reduce with shuffles and add
into their row's digest with a 64-bit atomic add (the sum wraps mod 2**64, so the
order of the additions does not matter).
"""

from __future__ import annotations

import numpy as np

from kvplan.lowering import split_ranges
from kvplan.planning.ranges import cut_rows

PIECE_BYTES = 256 << 10
TEMPLATE_PIECE_BYTES = 64 << 10  # a warp copies one template piece
DIGEST_PIECE_BYTES = 64 << 10  # a thread block digests one piece
THREADS = 256
BLOCKS_PER_SM = 16

_SOURCE = r"""
// One range: a byte head up to the destination's 16-byte boundary, 16-byte vectors
// (four in flight per thread) when the source is equally aligned, a byte tail.
// `tid` / `nthreads`: this thread's index among those sharing the range (a block or a warp).
__device__ __forceinline__ void copy_range(const unsigned char* s, unsigned char* d, long long len,
                                           long long tid, long long nthreads) {
  long long head = (16 - (long long)((unsigned long long)d & 15)) & 15;
  if (head > len) head = len;
  if ((((unsigned long long)s + head) & 15) != 0) {   // misaligned relative to each other
    for (long long i = tid; i < len; i += nthreads) d[i] = s[i];
    return;
  }
  for (long long i = tid; i < head; i += nthreads) d[i] = s[i];
  const uint4* vs = (const uint4*)(s + head);
  uint4* vd = (uint4*)(d + head);
  long long n16 = (len - head) >> 4;
  long long i = tid;
  const long long step = nthreads;
  for (; i + 3 * step < n16; i += 4 * step) {
    uint4 a = vs[i], b = vs[i + step], c = vs[i + 2 * step], e = vs[i + 3 * step];
    vd[i] = a; vd[i + step] = b; vd[i + 2 * step] = c; vd[i + 3 * step] = e;
  }
  for (; i < n16; i += step) vd[i] = vs[i];
  for (long long j = head + (n16 << 4) + tid; j < len; j += nthreads) d[j] = s[j];
}

extern "C" __global__ void copy_ranges(const unsigned long long* __restrict__ srcs,
    const unsigned long long* __restrict__ dsts, const long long* __restrict__ lens, long long n) {
  for (long long r = blockIdx.x; r < n; r += gridDim.x)
    copy_range((const unsigned char*)srcs[r], (unsigned char*)dsts[r], lens[r], threadIdx.x, blockDim.x);
}

// kvplan.lowering.template's formula, one warp per copy (entry e, span j): many small copies in
// flight per SM hide the latency of the two dependent index loads before the data.
//   src = sbase[e] + src_id * sstride[e] + soff[e], dst likewise, lens[e] bytes,
// skipped when an id is -1 or the decode block is before the layer's first kept one.
// A bounce step's staging side (scratch 1: source, 2: destination) is indexed by span
// position, its id's index // blocks per span + first_position (kvplan.lowering.positional),
// where the id is not -1.
// req = [8 per group: entry start, entries, spans, ns, nd, src ids at, dst ids at,
//        first copy][first kept block per layer][block ids]
extern "C" __global__ void copy_template(
    const unsigned long long* __restrict__ sbase, const unsigned long long* __restrict__ dbase,
    const long long* __restrict__ sstride, const long long* __restrict__ dstride,
    const long long* __restrict__ soff, const long long* __restrict__ doff, const long long* __restrict__ lens,
    const long long* __restrict__ sblk, const long long* __restrict__ dblk, const long long* __restrict__ layer,
    const long long* __restrict__ req, long long groups, long long layers, long long total, long long scratch,
    long long first_position) {
  const long long* first_kept = req + groups * 8;
  const long long* ids = first_kept + layers;
  const long long lane = threadIdx.x & 31;
  const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
  for (long long q = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; q < total; q += warps) {
    long long g = 0;
    while (g + 1 < groups && q >= req[(g + 1) * 8 + 7]) g++;
    const long long* m = req + g * 8;
    long long local = q - m[7];
    long long e = m[0] + local / m[2];
    long long j = local % m[2];
    long long di = j * m[4] + dblk[e];
    long long s_id = ids[m[5] + j * m[3] + sblk[e]];
    long long d_id = ids[m[6] + di];
    if (s_id < 0 || d_id < 0 || di < first_kept[layer[e]]) continue;
    if (scratch == 1) s_id = (j * m[3] + sblk[e]) / m[3] + first_position;
    else if (scratch == 2) d_id = di / m[4] + first_position;
    copy_range((const unsigned char*)(sbase[e] + s_id * sstride[e] + soff[e]),
               (unsigned char*)(dbase[e] + d_id * dstride[e] + doff[e]), lens[e], lane, 32);
  }
}

// kvplan.lowering.integrity: digest(row) = sum_i mix(256 * i + byte_i) mod 2**64, i the
// byte's position in its row; mix = splitmix64's finaliser of x + golden ratio.
__device__ __forceinline__ unsigned long long kvplan_mix(unsigned long long x) {
  unsigned long long z = x + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Piece p: `len[p]` bytes at `addr[p]`, which are positions start[p].. of row `row[p]`.
// Blocks stride over pieces (the loop bound is uniform in a block, so every lane of a
// warp reaches the shuffles); out[] must be zeroed before the launch.
extern "C" __global__ void digest_ranges(const unsigned long long* __restrict__ addr,
    const long long* __restrict__ start, const long long* __restrict__ len, const long long* __restrict__ row,
    long long n, unsigned long long* __restrict__ out) {
  for (long long p = blockIdx.x; p < n; p += gridDim.x) {
    const unsigned char* s = (const unsigned char*)addr[p];
    const unsigned long long base = (unsigned long long)start[p];
    const long long count = len[p];
    unsigned long long acc = 0ULL;
    for (long long i = threadIdx.x; i < count; i += blockDim.x)
      acc += kvplan_mix(((base + (unsigned long long)i) << 8) | (unsigned long long)s[i]);
    for (int offset = 16; offset > 0; offset >>= 1)
      acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if ((threadIdx.x & 31) == 0 && acc != 0ULL)
      atomicAdd(out + row[p], acc);
  }
}
"""

_kernels: dict[tuple[int, str], object] = {}
_sms: dict[int, int] = {}
_peer_enabled: set[tuple[int, int]] = set()


def _kernel(cp, device: int, name: str = "copy_ranges"):
    if (device, name) not in _kernels:
        with cp.cuda.Device(device):
            _kernels[device, name] = cp.RawModule(code=_SOURCE).get_function(name)
    return _kernels[device, name]


def _grid(cp, device: int, n: int) -> int:
    if device not in _sms:
        _sms[device] = cp.cuda.Device(device).attributes["MultiProcessorCount"]
    return int(min(n, _sms[device] * BLOCKS_PER_SM))


def enable_peer_access(cp, device: int, peer: int) -> bool:
    """Let kernels on `device` touch `peer`'s memory; once per pair. False if impossible."""
    if device == peer or (device, peer) in _peer_enabled:
        return True
    if not cp.cuda.runtime.deviceCanAccessPeer(device, peer):
        return False
    with cp.cuda.Device(device):
        try:
            cp.cuda.runtime.deviceEnablePeerAccess(peer)
        except cp.cuda.runtime.CUDARuntimeError as error:  # already enabled by someone else
            if "PeerAccessAlreadyEnabled" not in str(error):
                raise
    _peer_enabled.add((device, peer))
    return True


def device_ranges(cp, device: int, src_addr, dst_addr, nbytes) -> tuple:
    """Kernel arguments on `device` (current stream): split ranges, one upload."""
    src, dst, size = split_ranges(src_addr, dst_addr, nbytes, PIECE_BYTES)
    packed = np.stack([src, dst, size.astype(np.uint64)])
    with cp.cuda.Device(device):
        table = cp.asarray(packed)
        return table[0], table[1], table[2].view(cp.int64), len(size)


def launch(cp, device: int, ranges: tuple, stream) -> None:
    """Enqueue the one launch for `device_ranges(...)` output on `stream`."""
    src, dst, size, n = ranges
    if not n:
        return
    with cp.cuda.Device(device), stream:  # RawKernel launches on the current stream
        _kernel(cp, device)((_grid(cp, device, n),), (THREADS,), (src, dst, size, np.int64(n)))


def copy_ranges(cp, device: int, src_addr, dst_addr, nbytes, stream) -> int:
    """Enqueue one launch on `device` / `stream` copying every range; returns pieces.

    The address arrays are uploaded on `stream` too, so the launch is ordered after them.
    """
    with cp.cuda.Device(device), stream:
        ranges = device_ranges(cp, device, src_addr, dst_addr, nbytes)
        launch(cp, device, ranges, stream)
    return ranges[3]


def memcpy_peer_ranges(cp, device: int, src_device: int, src_addr, dst_addr, nbytes, stream) -> None:
    """Fallback without peer access: one cudaMemcpyPeerAsync per (coalesced) range."""
    with cp.cuda.Device(device):
        for s, d, n in zip(src_addr.tolist(), dst_addr.tolist(), nbytes.tolist()):
            cp.cuda.runtime.memcpyPeerAsync(d, device, s, src_device, n, stream.ptr)


def upload_template(cp, device: int, template, src_base, dst_base, stream) -> tuple:
    """A `kvplan.lowering.CopyTemplate` on `device`, with each entry's region bases
    resolved (uploaded once per plan and decode rank). The upload is enqueued on the
    stream the launches use: a non-blocking stream does not wait for the default one."""
    with cp.cuda.Device(device), stream:
        cols = [cp.asarray(np.asarray(a, np.uint64)) for a in (src_base, dst_base)]
        cols += [cp.asarray(np.ascontiguousarray(getattr(template, name), np.int64)) for name in
                 ("src_stride", "dst_stride", "src_offset", "dst_offset", "nbytes", "src_block", "dst_block", "layer")]
    return (tuple(cols), *group_entries(template), Upload())


def group_entries(template) -> tuple[np.ndarray, np.ndarray]:
    """(first entry, entry count) of every group (entries are sorted by group)."""
    counts = np.bincount(template.group, minlength=len(template.blocks_per_span)) if len(template) else \
        np.zeros(len(template.blocks_per_span), np.int64)
    return np.r_[0, np.cumsum(counts)][:-1], counts


def pack_request(template, blocks, entry_start, entries) -> tuple[np.ndarray, int, int]:
    """The kernel's per-request argument (see `copy_template` in the CUDA source):
    (packed int64 array, groups, copies)."""
    meta, ids, at, copies = [], [], 0, 0
    for g, (ns, nd) in enumerate(template.blocks_per_span):
        spans = blocks.spans[g]
        src_at, dst_at = at, at + len(blocks.src_ids[g])
        at = dst_at + len(blocks.dst_ids[g])
        ids += [blocks.src_ids[g], blocks.dst_ids[g]]
        meta.append((entry_start[g], entries[g], max(spans, 1), ns, nd, src_at, dst_at, copies))
        copies += int(entries[g]) * spans
    packed = np.concatenate([np.asarray(meta, np.int64).reshape(-1), blocks.first_kept, *ids]).astype(np.int64)
    return packed, len(meta), copies


SCRATCH_SIDES = {None: 0, "src": 1, "dst": 2}  # the kernel's `scratch` argument


def launch_template(cp, device: int, uploaded: tuple, template, blocks, stream, *, scratch: str | None = None,
                    first_position: int = 0) -> int:
    """Enqueue one launch copying a request (`kvplan.lowering.RequestBlocks`); the only
    upload per request is its block ids and a few counts. `scratch` ("src" / "dst"):
    that side is a bounce step's staging, indexed by span position from
    `first_position` (the kernel computes `kvplan.lowering.positional`'s positions).
    Returns the copies launched."""
    cols, entry_start, entries, upload = uploaded
    packed, groups, copies = pack_request(template, blocks, entry_start, entries)
    if not copies:
        return 0
    with cp.cuda.Device(device), stream:
        request = upload.send(cp, packed, stream)
        warps_per_block = THREADS // 32
        _kernel(cp, device, "copy_template")((_grid(cp, device, -(-copies // warps_per_block)),), (THREADS,),
                                             (*cols, request, np.int64(groups), np.int64(len(blocks.first_kept)),
                                              np.int64(copies), np.int64(SCRATCH_SIDES[scratch]),
                                              np.int64(first_position)))
    return copies


class Upload:
    """A request's kernel argument sent from pinned host memory, reused request after
    request (`cp.asarray` of pageable memory allocates and copies synchronously, tens of
    microseconds a request); an event keeps the buffer until its last copy has run."""

    def __init__(self):
        self._host = self._device = self._event = None

    def send(self, cp, packed: np.ndarray, stream):
        """`packed` (int64) on the current device, its copy enqueued on `stream`."""
        n = len(packed)
        if self._host is None or len(self._host) < n:
            size = max(n, 2 * len(self._host) if self._host is not None else 4096)
            if self._event is not None:
                self._event.synchronize()
            memory = cp.cuda.alloc_pinned_memory(size * 8)
            self._host = np.frombuffer(memory, np.int64, size)
            self._device = cp.empty(size, cp.int64)
            self._event = cp.cuda.Event(disable_timing=True)
        else:
            self._event.synchronize()  # the last request's copy has read the buffer (long since, as a rule)
        self._host[:n] = packed
        cp.cuda.runtime.memcpyAsync(self._device.data.ptr, self._host.ctypes.data, n * 8,
                                    cp.cuda.runtime.memcpyHostToDevice, stream.ptr)
        self._event.record(stream)
        return self._device[:n]


def digest_pieces(addr, nbytes, piece_bytes: int = DIGEST_PIECE_BYTES) -> tuple[np.ndarray, ...]:
    """The digest kernel's pieces of ranges at `addr`: (address, position in its row,
    length, row) of every non-empty piece of at most `piece_bytes` bytes.

    >>> [a.tolist() for a in digest_pieces([1000, 5000, 9000], [10, 0, 3], 4)]
    [[1000, 1004, 1008, 9000], [0, 4, 8, 0], [4, 4, 2, 3], [0, 0, 0, 2]]
    """
    n = np.asarray(nbytes, np.int64).reshape(-1)
    row, within, size = cut_rows(n, piece_bytes)
    keep = size > 0
    row, within, size = row[keep], within[keep], size[keep]
    return np.asarray(addr, np.uint64).reshape(-1)[row] + within.astype(np.uint64), within, size, row


def digest_ranges(cp, device: int, addr, nbytes, stream) -> np.ndarray:
    """`kvplan.lowering.range_digests` of ranges at device addresses `addr` on `device`,
    in one launch on `stream` (ordered after the copies enqueued there); returns the
    digests on the host (this waits for the stream)."""
    n = len(np.asarray(nbytes).reshape(-1))
    if not n:
        return np.zeros(0, np.uint64)
    piece_addr, start, size, row = digest_pieces(addr, nbytes)
    with cp.cuda.Device(device), stream:
        out = cp.zeros(n, cp.uint64)
        if len(row):
            table = cp.asarray(np.stack([piece_addr, start.astype(np.uint64), size.astype(np.uint64),
                                         row.astype(np.uint64)]))
            _kernel(cp, device, "digest_ranges")((_grid(cp, device, len(row)),), (THREADS,),
                                                 (table[0], table[1].view(cp.int64), table[2].view(cp.int64),
                                                  table[3].view(cp.int64), np.int64(len(row)), out))
        host = np.empty(n, np.uint64)
        out.get(stream=stream, out=host)
    stream.synchronize()
    return host
