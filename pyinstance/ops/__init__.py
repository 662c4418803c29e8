"""Compiled kernels, one Python entry per op; ``_reference`` holds their pure-torch oracles."""
