"""Calibrate `kvplan.report.estimate`'s transport constants from a bench_transfer run, and
print its predictions next to what was measured.

Per request of `rows` direct copies (or `copies` bounce copies) moving `bytes`:

    direct  t = request_s + rows * per_copy_s + bytes / link_Bps
    bounce  t = bounce_request_s + copies * per_copy_s + bytes / link_Bps + 2 * bytes / local_Bps

`link_Bps` and `bounce_request_s` are fitted on the bounce runs (few large copies),
`request_s` and `per_copy_s` on the direct ones, all by least squares kept non-negative;
`local_Bps` (pack and unpack, one kernel each) is the measured pack kernel rate
(the formulas are `kvplan.report.TransportModel`'s). The fit
and the evaluation use the same 16 plans: in-sample, so the table says how well the model
describes these runs, not how well it extrapolates.

    python3 benchmarks/fit_transfer_model.py benchmarks/data/2026-11-30-bounce-nixl.json \\
        benchmarks/data/2026-11-30-bounce-cupy-ucx.json
"""

from __future__ import annotations

import itertools
import json
import sys

import attrs
import numpy as np

from kvplan.report import TransportModel

LOCAL_BPS = 1.4e12  # pack kernel, probe_bounce_host.py: 1.29 - 1.61 TB/s
KEYS = {"nixl": ("nixl_prep_GBps", "nixl_bounce_GBps"), "ucx": ("ucx_GBps", "ucx_bounce_GBps"),
        "cupy": ("cupy_request_GBps", "cupy_bounce_GBps")}


def nonnegative_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of relative errors (times span three decades; a pick depends on
    ratios) with every coefficient >= 0 (two or three unknowns: try each active set)."""
    scale = 1 / np.maximum(np.abs(y), 1e-9)
    a, y = a * scale[:, None], y * scale
    best, best_err = np.zeros(a.shape[1]), np.inf
    for keep in itertools.product([True, False], repeat=a.shape[1]):
        cols = [i for i, k in enumerate(keep) if k]
        x = np.zeros(a.shape[1])
        if cols:
            x[cols] = np.linalg.lstsq(a[:, cols], y, rcond=None)[0]
        if (x < 0).any():
            continue
        err = float(((a @ x - y) ** 2).sum())
        if err < best_err:
            best, best_err = x, err
    return best


def fit(rows: list, kind: str) -> TransportModel:
    direct_key, bounce_key = KEYS[kind]
    nbytes = np.array([r["bytes"] for r in rows], float)
    direct_s = nbytes / np.array([r[direct_key] for r in rows]) / 1e9
    bounce_s = nbytes / np.array([r[bounce_key] for r in rows]) / 1e9
    h, inv_link = nonnegative_lstsq(np.stack([np.ones_like(nbytes), nbytes], 1), bounce_s - 2 * nbytes / LOCAL_BPS)
    link = 1 / inv_link if inv_link > 0 else np.inf
    rw = np.array([r["ranges"] for r in rows], float)
    a, c = nonnegative_lstsq(np.stack([np.ones_like(nbytes), rw], 1), direct_s - nbytes / link)
    return TransportModel(request_s=float(a), per_copy_s=float(c), link_Bps=float(link), bounce_request_s=float(h),
                          local_Bps=LOCAL_BPS)


def main(paths) -> None:
    rows = [r for path in paths for r in json.load(open(path))]
    for kind, (direct_key, bounce_key) in KEYS.items():
        mine = [r for r in rows if direct_key in r and bounce_key in r]
        if not mine:
            continue
        model = fit(mine, kind)
        print(f"{kind}: " + ", ".join(f"{k}={v:.4g}" for k, v in attrs.asdict(model).items()))
        print("| plan | TP | direct ms (predicted) | bounce ms (predicted) | auto picks | within 10 % of best |")
        print("|---|---|---|---|---|---|")
        good = 0
        for r in mine:
            n = r["bytes"]
            direct_ms, bounce_ms = 1e3 * n / r[direct_key] / 1e9, 1e3 * n / r[bounce_key] / 1e9
            p_direct = 1e3 * model.direct_seconds(r["ranges"], n)
            p_bounce = 1e3 * model.bounce_seconds(r["bounce_copies"], n)
            pick = "bounce" if p_bounce < p_direct else "direct"
            ok = (bounce_ms if pick == "bounce" else direct_ms) <= 1.1 * min(direct_ms, bounce_ms)
            good += ok
            print(f"| {r['layout']} | {r['tp']} | {direct_ms:.2f} ({p_direct:.2f}) | {bounce_ms:.2f} ({p_bounce:.2f}) "
                  f"| {pick} | {'yes' if ok else 'no'} |")
        print(f"{kind}: {good} of {len(mine)} picks within 10 % of the best measured\n")


if __name__ == "__main__":
    main(sys.argv[1:])
