"""The demo's sample collection, its query photos and its HTML page.

``collection/<instance>/`` holds one public-domain or CC0 photo per object (see
``collection/LICENSES.md``), ``unknown/`` photos of objects that are not in it.
"""

from __future__ import annotations

from pathlib import Path

#: One sub-folder per instance, named by its instance id.
COLLECTION_DIR = Path(__file__).parent / "collection"
#: Photos of objects outside the collection (the "unknown" answer is right for them).
UNKNOWN_DIR = Path(__file__).parent / "unknown"
