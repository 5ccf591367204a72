"""Reports over a plan: what it costs (`cost`) and a readable summary (`describe`).

Functions of a finished plan; they import planning (and layout for region sizes) and
nothing imports them but the public API and the command line.
"""

from .cost import HEADER, PlanCost, compare_conv_strategies, plan_cost
from .describe import describe

__all__ = ["HEADER", "PlanCost", "compare_conv_strategies", "describe", "plan_cost"]
