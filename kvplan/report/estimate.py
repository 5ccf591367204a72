"""How long a request takes on a transport, direct or bounce: the model "auto" chooses by.

Per request of a decode rank moving `bytes` in `copies` copies (a direct plan's rows, one
per run per block; or bounce's one per layer and source rank), after `pack + unpack` of
the same bytes at local memory speed for bounce:

    direct  t = request_s + direct_copies * per_copy_s + bytes / link_Bps
    bounce  t = bounce_request_s + bounce_copies * per_copy_s + bytes / link_Bps + 2 * bytes / local_Bps

The constants (`TRANSPORT_MODELS`) were fitted on the GPU host (2 x H200, NVLink) with
`benchmarks/fit_transfer_model.py` (least squares of relative errors) from the
2026-11-30 runs of the 16 benchmark plans (`benchmarks/data/`); on other hardware, fit
your own and pass a `TransportModel`.
Counts are `request_cost`'s: scattered block ids (nothing merges across blocks) and
every block of the request needed (sliding windows need fewer).
"""

from __future__ import annotations

import attrs

from ..errors import SpecError
from .cost import check_plan
from .request_cost import bounce_copies, check_request_tokens, copies_per_row


@attrs.frozen(kw_only=True)
class TransportModel:
    """Seconds per request, per copy, and bytes per second of one transport."""

    request_s: float
    per_copy_s: float
    link_Bps: float
    bounce_request_s: float
    local_Bps: float

    def direct_seconds(self, copies: int, nbytes: int) -> float:
        """A direct request of `copies` copies moving `nbytes` (module docstring)."""
        return self.request_s + copies * self.per_copy_s + nbytes / self.link_Bps

    def bounce_seconds(self, copies: int, nbytes: int) -> float:
        """A bounce request: its copies, and the same bytes packed and unpacked locally."""
        return self.bounce_request_s + copies * self.per_copy_s + nbytes / self.link_Bps + 2 * nbytes / self.local_Bps


# benchmarks/fit_transfer_model.py on benchmarks/data/2026-11-30-bounce-*.json
TRANSPORT_MODELS = {
    "nixl": TransportModel(request_s=0.0, per_copy_s=8.023e-06, link_Bps=2.715e11, bounce_request_s=1.896e-3,
                           local_Bps=1.4e12),
    "ucx": TransportModel(request_s=3.493e-3, per_copy_s=7.561e-07, link_Bps=1.463e11, bounce_request_s=3.362e-3,
                          local_Bps=1.4e12),
    "cupy": TransportModel(request_s=1.846e-4, per_copy_s=7.529e-11, link_Bps=3.75e11, bounce_request_s=9.274e-4,
                           local_Bps=1.4e12),
}


@attrs.frozen(kw_only=True)
class TransferEstimate:
    """Predicted seconds per request, direct and bounce (`estimate` computes one)."""

    transport: str
    request_tokens: int
    bytes: int
    direct_copies: int
    bounce_copies: int
    direct_s: float
    bounce_s: float

    @property
    def pick(self) -> str:
        """The cheaper strategy ("direct" on a tie)."""
        return "bounce" if self.bounce_s < self.direct_s else "direct"


def estimate(plan, transport, *, request_tokens: int = 4096, dst_rank: int = 0) -> TransferEstimate:
    """Predict one request of `request_tokens` tokens for `dst_rank` on `transport` (a
    name in `TRANSPORT_MODELS` or a `TransportModel`), direct and bounce.

    >>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 32)
    >>> e = estimate(plan(EngineSpec(model=m, kv_layout="NHD"), EngineSpec(model=m, tp=2, kv_layout="NHD")), "nixl")
    >>> e.direct_copies, e.bounce_copies, e.pick      # a run per layer, block and token; a copy per layer
    (131072, 32, 'bounce')
    """
    check_plan(plan)
    model = TRANSPORT_MODELS.get(transport) if isinstance(transport, str) else transport
    if not isinstance(model, TransportModel):
        raise SpecError(f"transport must be one of {', '.join(TRANSPORT_MODELS)} or a TransportModel, "
                        f"got {transport!r}"[:300])
    request_tokens = check_request_tokens(request_tokens)
    reads = plan.reads(dst_rank)
    # a bounce plan's pack rows are the direct plan's rows
    rows = plan.pre_tables[dst_rank] if plan.transfer_strategy == "bounce" else reads
    per_row = copies_per_row(plan, rows, request_tokens)
    direct_copies = int(per_row.sum())
    nbytes = int((rows.nbytes * per_row).sum())
    bounce = bounce_copies(rows)
    return TransferEstimate(
        transport=transport if isinstance(transport, str) else "custom", request_tokens=request_tokens,
        bytes=nbytes, direct_copies=direct_copies, bounce_copies=bounce,
        direct_s=model.direct_seconds(direct_copies, nbytes), bounce_s=model.bounce_seconds(bounce, nbytes))
