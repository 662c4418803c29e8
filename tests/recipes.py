"""Recipes that tests pin (instead of the default, which may change with the next table).

Each test folder takes one of these and changes only the sizes it needs.
"""

from __future__ import annotations

from pyinstance.index import DEFAULT_RECIPE
from pyinstance.models.regions import DEFAULT_WINDOWS

#: Lite0 + GeM at one scale, unwhitened, queries described as references.
GEM_ONE_SCALE = DEFAULT_RECIPE.with_(
    head="gem", scales=(1.0,), postprocess={}, query_max_side=None, query_windows=None
)

#: The default before the comparison table chose one: :data:`GEM_ONE_SCALE` with queries
#: described at 560 px and scored by their best of the 19 default windows.
PREVIOUS_DEFAULT = GEM_ONE_SCALE.with_(query_max_side=560, query_windows=DEFAULT_WINDOWS)
