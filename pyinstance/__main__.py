"""``python -m pyinstance``: the ``pyinstance`` command (what ``torchrun -m pyinstance`` runs)."""

import sys

from pyinstance.cli import main

sys.exit(main())
