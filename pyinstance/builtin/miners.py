"""Registers the built-in miners (implemented in :mod:`pyinstance.models.miners`)."""

from __future__ import annotations

from pyinstance.hookspecs import Register, hookimpl
from pyinstance.models.miners import (
    BatchAllMiner,
    BatchHardMiner,
    CurriculumMiner,
    HardNegativeMiner,
    OfflineMiner,
    RandomMiner,
    SemiHardMiner,
)


@hookimpl
def pyinstance_register_miners(register: Register) -> None:
    register("batch_hard", BatchHardMiner)
    register("hard_negative", HardNegativeMiner)
    register("semihard", SemiHardMiner, aliases=("semi_hard",))
    register("batch_all", BatchAllMiner, aliases=("all",))
    register("offline", OfflineMiner)
    register("random", RandomMiner)
    register("curriculum", CurriculumMiner)
