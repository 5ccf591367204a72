"""What a backend keeps of a `kvplan.transport.Prepared`, and the check that the work
handed to `execute` / `serve` is something this backend can run.

A `Prepared` is a public value anyone can build or `attrs.evolve`; its opaque `state`
is a `Ticket` naming the backend instance that made it and the plan and decode rank it
was made for. Fast-path state (descriptor lists, a device template) is keyed by the
ticket, so a `Prepared` from another backend, or one whose plan or rank was swapped
after `prepare`, is refused before anything reaches a transport.

>>> import numpy as np
>>> from kvplan import Transfer
>>> t = Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[4], dst_region=[0], dst_offset=[2], nbytes=[3])
>>> check_work(t, None, None, backend="host", owner=object(), call="execute") is None
True
>>> check_work(t, [0], [1], backend="host", owner=object(), call="execute")
Traceback (most recent call last):
...
kvplan.errors.BlockError: execute(transfer, src_blocks=[0], dst_blocks=[1]): a Transfer already holds its byte ranges; block ids go with a Prepared
"""

from __future__ import annotations

import attrs

from kvplan.errors import BlockError, SpecError
from kvplan.lowering import Transfer
from kvplan.transport import Prepared


@attrs.frozen(eq=False, kw_only=True)
class Ticket:
    """The `state` of a `Prepared`: who made it (`owner`, a backend's identity token),
    for which plan object and decode rank. Compared by identity."""

    owner: object = attrs.field(repr=False)
    plan: object = attrs.field(repr=False)
    dst_rank: int
    ring: object = None  # a kvplan.lowering.StagingRing: bounce staging moves chunk by chunk (_ring)


def check_work(work, src_blocks, dst_blocks, *, backend: str, owner: object, call: str) -> Ticket | None:
    """None for a `Transfer` (which must come without block ids); the `Ticket` of a
    `Prepared` made by the backend `owner` identifies (which needs both block lists).
    Anything else raises a `KvplanError` naming what was given."""
    if isinstance(work, Transfer):
        if src_blocks is not None or dst_blocks is not None:
            raise BlockError(f"{call}(transfer, src_blocks={src_blocks!r}, dst_blocks={dst_blocks!r}): a Transfer "
                             "already holds its byte ranges; block ids go with a Prepared")
        return None
    if not isinstance(work, Prepared):
        raise SpecError(f"{call}() takes a Transfer or a Prepared from prepare(plan, dst_rank), got "
                        f"{type(work).__name__}")
    ticket = work.state
    if work.backend != backend or not isinstance(ticket, Ticket) or ticket.owner is not owner:
        made_by = f"a {work.backend!r} backend" if work.backend != backend else f"another {backend!r} backend"
        raise SpecError(f"{call}(): this Prepared (decode rank {work.dst_rank}) was made by {made_by}, not by this "
                        f"{backend!r} backend; prepare the plan with the backend that runs it")
    if ticket.plan is not work.plan or ticket.dst_rank != work.dst_rank:
        raise SpecError(f"{call}(): this Prepared names decode rank {work.dst_rank} of plan {id(work.plan):#x} but "
                        f"was prepared for decode rank {ticket.dst_rank} of plan {id(ticket.plan):#x}; call "
                        "prepare(plan, dst_rank) for the plan and rank you mean")
    if src_blocks is None or dst_blocks is None:
        raise BlockError(f"{call}(prepared, src_blocks={src_blocks!r}, dst_blocks={dst_blocks!r}): a Prepared "
                         "needs the request's block ids on both engines")
    return ticket


def block_relative(plan) -> bool:
    """Can `plan`'s reads be prepared once, block-relative, for any request? Not with
    local steps (staged, permuted conv strategies: their reads use per-request scratch,
    indexed by a state's place in the request rather than its block id), nor without
    both engines' `num_blocks` (the extent a prepared route checks its bounds against).

    >>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=2, head_dim=4),))
    >>> block_relative(plan(EngineSpec(model=m, num_blocks=4), EngineSpec(model=m, num_blocks=4)))
    True
    >>> block_relative(plan(EngineSpec(model=m), EngineSpec(model=m)))
    False
    """
    return not plan.has_local_steps and plan.src.num_blocks is not None and plan.dst.num_blocks is not None
