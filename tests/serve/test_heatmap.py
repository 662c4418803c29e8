"""Heat maps compare the photo's feature map with the reference's stored (raw) descriptor."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pyinstance.index import DEFAULT_RECIPE, InstanceIndex
from pyinstance.serve.heatmap import similarity_heatmap


def test_post_processing_does_not_change_the_heat_map(shared_data: Path, tmp_path: Path) -> None:
    pairs = shared_data / "opencv-pairs"
    recipe = DEFAULT_RECIPE.with_(max_side=160, query_windows=None, query_max_side=None)
    whitened = recipe.with_(postprocess={"whiten": {"power": 0.5}})
    photo = Image.open(pairs / "query" / "graf3.png").convert("RGB")
    maps = []
    for name, used in (("plain", recipe), ("whitened", whitened)):
        index, _ = InstanceIndex.build(
            tmp_path / name, pairs / "manifest.csv", used, progress=False
        )
        with index:
            maps.append(similarity_heatmap(index, photo, "reference/graf1.png"))
    assert maps[0] == maps[1]
