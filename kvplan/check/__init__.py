"""The checker: `verify(plan)`, an identity simulation independent of the planner.

`cells` restates every page layout from the specs alone (element cells in memory
order); `verify` applies a plan's reads and local steps to those cells and reports
every destination byte that is wrong, missing, written twice or read out of bounds.
It imports spec only, so it shares no layout or planning code with what it checks.
"""

from .cells import Cells, byte_codes, held_indices, layer_cells, token_of
from .verify import VerifyReport, verify

__all__ = ["Cells", "VerifyReport", "byte_codes", "held_indices", "layer_cells", "token_of", "verify"]
