"""Reports over a plan: what it costs per span (`cost`) and per request
(`request_cost`), predicted times (`estimate`) and a readable summary (`describe`).

Functions of a finished plan; they import planning (and layout for region sizes) and
nothing imports them but the public API and the command line.
"""

from .cost import HEADER, PlanCost, compare_conv_strategies, conv_strategy_costs, plan_cost
from .describe import describe
from .estimate import TRANSPORT_MODELS, TransferEstimate, TransportModel, estimate
from .picture import plan_picture
from .request_cost import RankRequest, RequestCost, request_cost
from .summary import plan_summary

__all__ = ["HEADER", "TRANSPORT_MODELS", "PlanCost", "RankRequest", "RequestCost", "TransferEstimate",
           "TransportModel", "compare_conv_strategies", "conv_strategy_costs", "describe", "estimate", "plan_cost",
           "plan_picture", "plan_summary", "request_cost"]
