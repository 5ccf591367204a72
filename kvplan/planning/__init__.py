"""Stage 3, planning: which bytes each decode rank reads, per span of logical blocks.

`intersect` finds one layer's rows from the two engines' layouts (`sources` picks the
source rank of each index, `ranges` coalesces runs); `conv` rewrites state layers for
a conv strategy and `bounce` any layer for the bounce transfer strategy; `compat` checks two engines can pair; `planner` assembles
`PlanTables` (`plan_tables`) of `ReadTable`s, all built on the one row-table schema of
`rows`. Planning imports spec and layout.
"""

from .bounce import TRANSFER_STRATEGIES, apply_bounce, staging_slot
from .compat import check_compatible, require_compatible
from .conv import STRATEGIES, apply_strategy
from .plan_tables import PlanTables, blocks_per_span
from .planner import plan_tables
from .ranges import cut_rows, merged_nbytes, run_starts
from .rows import CopyRows, RowTable, column
from .sources import choose_source, preferred_sources, source_runs
from .tables import SCRATCH, ReadTable, StrategyRows, TemplateRows

__all__ = [
    "SCRATCH", "STRATEGIES", "TRANSFER_STRATEGIES", "CopyRows", "PlanTables", "ReadTable", "RowTable", "StrategyRows", "TemplateRows",
    "apply_bounce", "apply_strategy", "blocks_per_span", "check_compatible", "choose_source", "require_compatible", "column", "cut_rows", "merged_nbytes",
    "plan_tables", "preferred_sources", "run_starts", "source_runs", "staging_slot",
]
