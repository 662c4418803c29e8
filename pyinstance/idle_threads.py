"""Worker threads that sleep when idle instead of spinning.

OpenMP (torch, the kernels) and OpenBLAS (numpy) keep the workers of a finished parallel
operation spinning for a while in case more work comes: about 0.1 s for OpenBLAS, longer
than a query, so the small whitening product of every query keeps a second core busy
all the time. Beside another busy process that spinning thread takes the CPU the query
needs. Each library reads its setting once, when it loads: the ``pyinstance`` command sets
them first thing; a program of your own calls :func:`sleep_idle_threads` before it
imports numpy or torch. This module imports neither.
"""

from __future__ import annotations

import os
import sys
import warnings

#: Each library's environment variable and the value that makes its idle workers sleep:
#: OpenMP's wait policy, and OpenBLAS's spin time (2**4 cycles, its minimum; default 2**28).
SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
#: The modules whose loading reads the settings: too late to set them once imported.
_READERS = ("numpy", "torch")


def sleep_idle_threads(*, warn: bool = True) -> dict[str, str]:
    """Set each variable of :data:`SETTINGS` that the environment does not set already
    (your own value wins) and return the values in force. Warns (unless ``warn`` is False)
    when numpy or torch is already imported: the libraries they loaded keep what they read
    then."""
    loaded = [name for name in _READERS if name in sys.modules]
    if warn and loaded:
        warnings.warn(
            f"sleep_idle_threads: {' and '.join(loaded)} already imported; call it before "
            "importing them, or set "
            + ", ".join(f"{k}={v}" for k, v in SETTINGS.items())
            + " in the environment",
            RuntimeWarning,
            stacklevel=2,
        )
    return {name: os.environ.setdefault(name, value) for name, value in SETTINGS.items()}


def idle_thread_settings() -> dict[str, str | None]:
    """The environment's value of each variable of :data:`SETTINGS` (None: unset, the
    library's own default, which spins)."""
    return {name: os.environ.get(name) for name in SETTINGS}
