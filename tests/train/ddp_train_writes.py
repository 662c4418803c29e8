"""``pyinstance train`` under torchrun, recording which rank replaced which file.

Run as ``torchrun ... ddp_train_writes.py LOG_FOLDER train CONFIG ...``: every file the
package writes goes through ``os.replace`` (atomic writes); each rank appends the names it
replaced to ``LOG_FOLDER/writes-rank<R>.txt`` and then runs the ``pyinstance`` command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyinstance.cli import main

_replace = os.replace


def _recording_replace(source, destination, **options) -> None:
    with open(Path(sys.argv[1]) / f"writes-rank{os.environ['RANK']}.txt", "a") as log:
        log.write(f"{Path(destination).name}\n")
    _replace(source, destination, **options)


if __name__ == "__main__":
    Path(sys.argv[1], f"writes-rank{os.environ['RANK']}.txt").touch()
    os.replace = _recording_replace
    sys.exit(main(sys.argv[2:]))
