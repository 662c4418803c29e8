"""The HTTP identification service and its web pages (``pyinstance serve``)."""

from __future__ import annotations

from pyinstance.serve.app import create_app

__all__ = ["create_app"]
