"""Limits: the largest sizes kvplan accepts, all in one place.

A size that cannot describe a real deployment (TP 2**40, a trillion-token block, a
ten-million-layer model) would otherwise make planning, `verify` or lowering allocate
without bound or run for hours. Each limit is far above what real engines use (the
reason says how far) and small enough that the worst configuration the limits accept
still plans and verifies in seconds and in a few GiB on a 2-core machine. Values are
checked where they enter: attrs validators of the specs and `EngineSpec` (fields),
`kvplan.planning.budget` where two engines are planned (spans, cells, rank pairs),
`from_hf_config` before it builds layers, lowering for a request's rows. Exceeding one
raises `SpecError` naming the value, the limit and its figure.

Three limits also keep `verify`'s identity codes exact (`kvplan.check.cells` packs a
global index into 20 bits, a token into 22 and a conv tap into 16), and the page and
block-count limits keep every byte offset inside int64 (``2**32 blocks x 2**30 B``).

>>> MAX_TP.check(8, "EngineSpec.tp")
>>> MAX_TP.check(2**40, "EngineSpec.tp")
Traceback (most recent call last):
...
kvplan.errors.SpecError: EngineSpec.tp is 1,099,511,627,776, over kvplan's limit MAX_TP = 1,024 (TP size of one engine: the largest deployments use 64-72)
"""

from __future__ import annotations

import attrs

from ..errors import SpecError


@attrs.frozen
class Limit:
    """One limit: its `name`, its `value` (the largest accepted) and the `reason` for it.

    >>> MAX_LAYERS.value, MAX_LAYERS.exceeded(5000)
    (4096, True)
    """

    name: str
    value: int
    reason: str

    def exceeded(self, value: int) -> bool:
        return value > self.value

    def error(self, value: int, what: str, *, at_least: bool = False) -> SpecError:
        """The `SpecError` for `what` = `value` (`at_least`: a count that stopped at `value`)."""
        size = f"at least {value:,}" if at_least else f"{value:,}"
        return SpecError(f"{what} is {size}, over kvplan's limit {self.name} = {self.value:,} ({self.reason})")

    def check(self, value: int, what: str) -> None:
        """Raise `SpecError` naming `what`, `value` and this limit when `value` exceeds it."""
        if value > self.value:
            raise self.error(value, what)


def check_count(value, what: str, limit: Limit | None = None, *, minimum: int = 1) -> None:
    """Raise `SpecError` unless `value` is an int (not a bool) of at least `minimum` and
    at most `limit`: the rule for every size and count kvplan takes as an argument.

    >>> check_count(4, "tp", MAX_TP)
    >>> check_count(0, "tp", MAX_TP)
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: tp must be a positive int, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise SpecError(f"{what} must be {kind}, got {value!r}"[:300])
    if limit is not None:
        limit.check(value, what)


# -- one engine and one model (checked by the specs' validators) ---------------------------
MAX_TP = Limit("MAX_TP", 1024, "TP size of one engine: the largest deployments use 64-72")
MAX_PP = Limit("MAX_PP", 1024, "pipeline stages of one engine: real engines use at most 16-32")
MAX_LAYERS = Limit("MAX_LAYERS", 4096, "cache-holding layers of one model (or slots of one layer group): "
                   "the largest models have under 200")
MAX_MODEL_LAYERS = Limit("MAX_MODEL_LAYERS", 16384, "a model's own layers, cache-holding or not (what pipeline "
                         "stages split): the largest models have under 200")
MAX_HEADS = Limit("MAX_HEADS", 65536, "heads or groups of one layer: real layers have at most 128")
MAX_HEAD_DIM = Limit("MAX_HEAD_DIM", 65536, "a head dim, latent width or SSM state size: real ones are at "
                     "most 576")
MAX_CONV_CHANNELS = Limit("MAX_CONV_CHANNELS", 2**20, "conv channels of one sub-projection, model-wide: real "
                          "layers have at most 32,768, and verify's identity codes hold a channel in 20 bits")
MAX_CONV_KERNEL = Limit("MAX_CONV_KERNEL", 1024, "conv kernel width: real kernels have 2-4 taps")
MAX_SPECULATIVE_TOKENS = Limit("MAX_SPECULATIVE_TOKENS", 1024, "speculative tokens (extra conv rows): real "
                               "engines use at most 16")
MAX_BLOCK_TOKENS = Limit("MAX_BLOCK_TOKENS", 2**20, "tokens of one logical or kernel block: vLLM's hybrid "
                         "blocks reach about 8,192")
MAX_WINDOW_TOKENS = Limit("MAX_WINDOW_TOKENS", 2**32, "a sliding window in tokens: real windows are at most "
                          "131,072")
MAX_NUM_BLOCKS = Limit("MAX_NUM_BLOCKS", 2**32, "logical blocks of one region: real engines hold at most "
                       "millions, and 2**32 blocks of MAX_PAGE_BYTES keep every offset inside int64")
MAX_PAGE_BYTES = Limit("MAX_PAGE_BYTES", 2**30, "bytes of one logical block of one region on one rank: real "
                       "pages are at most a few MiB")

# -- a pair of engines (checked by kvplan.planning.budget before anything is allocated) ---
MAX_SPAN_TOKENS = Limit("MAX_SPAN_TOKENS", 2**22, "tokens of one span, the lcm of the two logical block "
                        "sizes: vLLM's Nemotron-3-Nano at TP 1 -> 4 spans 138,336, and verify's identity codes "
                        "hold a token in 22 bits")
MAX_LAYER_CELLS = Limit("MAX_LAYER_CELLS", 2**23, "element cells planning and verify enumerate for one layer "
                        "of one decode rank: its own, those of the source ranks it reads, and half the bytes "
                        "a staged or permuted strategy simulates; the built-in models need at most 2.7 million "
                        "up to TP 16, 4.2 million up to TP 64")
MAX_PLAN_CELLS = Limit("MAX_PLAN_CELLS", 2**27, "element cells planning and verify enumerate for a whole plan, "
                       "MAX_LAYER_CELLS's count summed over decode ranks and distinct layers: the built-in "
                       "models need at most 23 million up to TP 16, 87 million up to TP 64")
MAX_PLAN_ROWS = Limit("MAX_PLAN_ROWS", 2**22, "rows of every decode rank's reads and local steps, after "
                      "merging: the built-in models' plans hold at most 450,000 up to TP 64")
MAX_RANK_LAYERS = Limit("MAX_RANK_LAYERS", 2**16, "decode TP x layers, the per-layer tables a plan builds "
                        "and verify checks: Llama-3.1-70B at TP 64 has 5,120")
MAX_TEMPLATES = Limit("MAX_TEMPLATES", 2**12, "decode TP x distinct layers, the layer templates planning "
                      "builds (each weighing every prefill rank) and verify checks: the built-in models build at most 128 "
                      "up to TP 64")

# -- one request (checked by lowering) ------------------------------------------------------
MAX_TRANSFER_ROWS = Limit("MAX_TRANSFER_ROWS", 2**26, "rows one lowered request may hold before merging: a "
                          "million-token request of a real 80-layer model needs about 40 million")

LIMITS: tuple[Limit, ...] = (
    MAX_TP, MAX_PP, MAX_LAYERS, MAX_MODEL_LAYERS, MAX_HEADS, MAX_HEAD_DIM, MAX_CONV_CHANNELS, MAX_CONV_KERNEL,
    MAX_SPECULATIVE_TOKENS, MAX_BLOCK_TOKENS, MAX_WINDOW_TOKENS, MAX_NUM_BLOCKS, MAX_PAGE_BYTES,
    MAX_SPAN_TOKENS, MAX_LAYER_CELLS, MAX_PLAN_CELLS, MAX_PLAN_ROWS, MAX_RANK_LAYERS, MAX_TEMPLATES,
    MAX_TRANSFER_ROWS,
)
