"""``python -m pyinstance``: the ``pyinstance`` command."""

import sys

from pyinstance.cli import main

sys.exit(main())
