"""The losses' implementation, one module per family; import them from :mod:`pyinstance.models.losses`."""
