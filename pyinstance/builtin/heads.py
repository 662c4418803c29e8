"""Built-in global pooling heads: MAC, SPoC, GeM, R-MAC (see :mod:`pyinstance.models.pooling`).

Every factory is ``factory(in_channels, *, out_dim=None, ...)``: ``out_dim`` adds a learned
linear projection to that many dimensions (dimension reduction / whitening as a layer).
"""

from __future__ import annotations

from pyinstance.hookspecs import Register, hookimpl
from pyinstance.models.pooling import MAC, RMAC, GeM, SPoC


@hookimpl
def pyinstance_register_heads(register: Register) -> None:
    register("mac", MAC)
    register("spoc", SPoC, aliases=("avg",))
    register("gem", GeM)
    register("rmac", RMAC)
