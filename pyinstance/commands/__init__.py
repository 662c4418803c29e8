"""Sub-commands of the ``pyinstance`` command that run the identification pipeline."""
