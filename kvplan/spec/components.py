"""The logical components a layer stores, and their integer codes in row tables.

A component says what an element *is*, never where it lives: the K or V vector of a
KV head and token, an MLA latent, a conv-state channel's taps (split by sub-projection:
x | B | C for Mamba2, Q | K | V for a gated delta net, x for Mamba1, one block for a
short conv) or an SSM head's state. Row tables store the code; "KV" and "mixed" name
merged rows that span several components.

>>> COMPONENT_CODE["V"], COMPONENTS[COMPONENT_CODE["conv_B"]]
(1, 'conv_B')
>>> sorted(CONV_COMPONENTS)[:3]
['conv', 'conv_B', 'conv_C']
"""

from __future__ import annotations

COMPONENTS = ("K", "V", "latent", "conv", "conv_x", "conv_B", "conv_C", "conv_Q", "conv_K", "conv_V", "ssm",
              "KV", "mixed")
COMPONENT_CODE = {name: code for code, name in enumerate(COMPONENTS)}
CONV_COMPONENTS = frozenset(name for name in COMPONENTS if name.startswith("conv"))
