"""Registers the built-in miners (implemented in :mod:`pyinstance.models.miners`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyinstance import plugins
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


def curriculum(
    schedule: Sequence[tuple[int | None, Any]] = ((2, "semihard"), (None, "hard_negative")),
) -> CurriculumMiner:
    """A :class:`CurriculumMiner` whose stages may name miners: the names are resolved here.

    Each stage's miner is a registered miner name, a ``(name, options)`` pair, or a miner.
    """

    def resolve(miner: Any) -> Any:
        if isinstance(miner, str):
            return plugins.get_miner(miner)
        if isinstance(miner, (tuple, list)) and len(miner) == 2 and isinstance(miner[0], str):
            return plugins.get_miner(miner[0], **dict(miner[1]))
        return miner  # a miner object, or something CurriculumMiner reports

    return CurriculumMiner(
        [
            (stage[0], resolve(stage[1]))
            if isinstance(stage, (tuple, list)) and len(stage) == 2
            else stage
            for stage in schedule
        ]
    )


@hookimpl
def pyinstance_register_miners(register: Register) -> None:
    register("batch_hard", BatchHardMiner)
    register("hard_negative", HardNegativeMiner)
    register("semihard", SemiHardMiner, aliases=("semi_hard",))
    register("batch_all", BatchAllMiner, aliases=("all",))
    register("offline", OfflineMiner)
    register("random", RandomMiner)
    register("curriculum", curriculum)
