"""A pinned view keeps answering from one commit while the index changes, from any thread."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from pyinstance.index import InstanceIndex

from .conftest import tiny_recipe, unit_rows


def test_pinned_view_is_frozen_and_version_counts_changes(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    index = InstanceIndex.create(tmp_path / "ix", recipe)
    x = unit_rows(12)
    index.add_descriptors(x[:6], ["a"] * 3 + ["b"] * 3, [f"im{i}" for i in range(6)], recipe)
    assert index.version() == 6
    view = index.pinned()
    index.add_descriptors(x[6:], ["c"] * 6, [f"im{i}" for i in range(6, 12)], recipe)
    index.remove(instance="a")
    assert index.version() == 12 + 3
    assert view.version() == 6 and len(view) == 6
    assert view.instances == ("a", "b")
    assert [image["id"] for image in view.images()] == [f"im{i}" for i in range(6)]
    found: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: found.append(view.search(x[6:7], 3).labels))
    thread.start()
    thread.join()
    assert set(found[0].ravel().tolist()) <= {0, 1}  # codes of a and b only
    with pytest.raises(PermissionError, match="read-only"):
        view.remove(instance="b")
    with pytest.raises(PermissionError, match="read-only"):
        view.set_setting("threshold", 0.5)
    assert len(index) == 9 and index.pinned().instances == ("b", "c")
    index.close()
