"""A heat map of something that is not a picture is refused naming ``image``."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.serve.heatmap import similarity_heatmap

from .test_collection_units import FEATURES, HeatView, MapBackbone


def test_a_photo_that_is_not_a_picture_is_named_image() -> None:
    backbone = MapBackbone(FEATURES)
    with pytest.raises(TypeError, match=r"^image: expected a path, PIL image"):
        similarity_heatmap(HeatView(backbone, np.zeros((2, 4))), 5, "r/1")
    assert backbone.inputs == []
