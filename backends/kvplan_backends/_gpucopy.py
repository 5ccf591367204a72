"""One CUDA kernel launch that copies many byte ranges (CuPy RawKernel).

Each thread block copies one range (ranges longer than `PIECE_BYTES` are cut first by
`kvplan.descriptors.split_ranges`, so large runs spread over many blocks). Inside a
range: a byte head up to the destination's 16-byte boundary, then 16-byte vector
loads four at a time when the source is equally aligned, then a byte tail; ranges
whose source and destination disagree modulo 16 take the byte path. Launched on the
destination's device it reads peer memory over NVLink (peer access enabled first).
"""

from __future__ import annotations

import numpy as np

from kvplan.descriptors import split_ranges

PIECE_BYTES = 256 << 10
THREADS = 256
BLOCKS_PER_SM = 16

_SOURCE = r"""
extern "C" __global__ void copy_ranges(const unsigned long long* __restrict__ srcs,
    const unsigned long long* __restrict__ dsts, const long long* __restrict__ lens, long long n) {
  for (long long r = blockIdx.x; r < n; r += gridDim.x) {
    const unsigned char* s = (const unsigned char*)srcs[r];
    unsigned char* d = (unsigned char*)dsts[r];
    long long len = lens[r];
    long long head = (16 - (long long)(dsts[r] & 15)) & 15;
    if (head > len) head = len;
    if (((srcs[r] + head) & 15) != 0) {            // misaligned relative to each other
      for (long long i = threadIdx.x; i < len; i += blockDim.x) d[i] = s[i];
      continue;
    }
    for (long long i = threadIdx.x; i < head; i += blockDim.x) d[i] = s[i];
    const uint4* vs = (const uint4*)(s + head);
    uint4* vd = (uint4*)(d + head);
    long long n16 = (len - head) >> 4;
    long long i = threadIdx.x;
    const long long step = blockDim.x;
    for (; i + 3 * step < n16; i += 4 * step) {   // four loads in flight per thread
      uint4 a = vs[i], b = vs[i + step], c = vs[i + 2 * step], e = vs[i + 3 * step];
      vd[i] = a; vd[i + step] = b; vd[i + 2 * step] = c; vd[i + 3 * step] = e;
    }
    for (; i < n16; i += step) vd[i] = vs[i];
    for (long long j = head + (n16 << 4) + threadIdx.x; j < len; j += blockDim.x) d[j] = s[j];
  }
}
"""

_kernels: dict[int, object] = {}
_sms: dict[int, int] = {}
_peer_enabled: set[tuple[int, int]] = set()


def _kernel(cp, device: int):
    if device not in _kernels:
        with cp.cuda.Device(device):
            _kernels[device] = cp.RawKernel(_SOURCE, "copy_ranges")
    return _kernels[device]


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
        if device not in _sms:
            _sms[device] = cp.cuda.Device(device).attributes["MultiProcessorCount"]
        grid = int(min(n, _sms[device] * BLOCKS_PER_SM))
        _kernel(cp, device)((grid,), (THREADS,), (src, dst, size, np.int64(n)))


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
