"""Fixtures of the evaluation tests: a small real index of opencv-pairs and labelled queries.

The index uses a small input side (160 px) to stay fast. The queries are chosen so that
the answers do not depend on the network: a copy of a reference photo is always answered
with that reference (its descriptor is the reference's own).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pyinstance.eval.evaluate import EvaluationResult, evaluate
from pyinstance.index import InstanceIndex, Recipe

RECIPE = Recipe(backbone="efficientnet_lite0", head="gem", dim=1280, max_side=160)
THRESHOLD = 0.5


@pytest.fixture(scope="session")
def pairs_index(build_pairs_index: Callable[[Recipe, str], Path]) -> InstanceIndex:
    """The nine opencv-pairs references, built once per session."""
    index = InstanceIndex.open(build_pairs_index(RECIPE, "eval"))
    yield index
    index.close()


@pytest.fixture(scope="session")
def labelled(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A manifest and an extra CSV with every kind of query and bad row.

    manifest (line: query -> expectation):
      (query photos are copies under the manifest's folder, named as the references)
      2 reference ref_box.png (not a query)
      3 box.png, box, set a                   -> right
      4 graf1.png, graf, set a                -> right
      5 rubberwhale1.png, rubberwhale, set b  -> right
      6 basketball1.png, basketball, set b    -> right
      7 copy of box.png labelled graf, set b  -> known, answered box: wrong
      8 copy of rubberwhale1.png, no id, set a   -> unknown, accepted (false accept)
      9 copy of basketball1.png, id "nosuch"     -> unknown id: unknown, false accept
      10 box.png again                        -> duplicate, skipped
      11 broken.jpg                           -> cannot decode, failed
      12 split "train"                        -> bad split, skipped
    extra:
      2 copy of graf1.png, ids "box;graf", multiple_paintings, set a -> right
      3 leuvenB.jpg, not_in_collection, set b -> unknown
    """
    data = shared_data / "opencv-pairs" / "reference"
    folder = tmp_path_factory.mktemp("queries")
    (folder / "q").mkdir()
    for name, copy in (
        ("box.png", "box_copy.png"),
        ("rubberwhale1.png", "rubber_copy.png"),
        ("basketball1.png", "basket_copy.png"),
        ("graf1.png", "graf_copy.png"),
        ("box.png", "ref_box.png"),
        ("box.png", "q/box.png"),
        ("graf1.png", "q/graf1.png"),
        ("rubberwhale1.png", "q/rubberwhale1.png"),
        ("basketball1.png", "q/basketball1.png"),
    ):
        shutil.copyfile(data / name, folder / copy)
    (folder / "broken.jpg").write_bytes(b"not a JPEG at all")
    manifest = folder / "manifest.csv"
    manifest.write_text(
        "path,instance_id,split,query_set\n"
        "ref_box.png,box,reference,-\n"
        "q/box.png,box,query,a\n"
        "q/graf1.png,graf,query,a\n"
        "q/rubberwhale1.png,rubberwhale,query,b\n"
        "q/basketball1.png,basketball,query,b\n"
        "box_copy.png,graf,query,b\n"
        "rubber_copy.png,,query,a\n"
        "basket_copy.png,nosuch,query,-\n"
        "q/box.png,box,query,a\n"
        "broken.jpg,box,query,a\n"
        "box_copy.png,box,train,a\n"
    )
    extra = folder / "extra.csv"
    extra.write_text(
        "path,instance_ids,kind,query_set\n"
        "graf_copy.png,box;graf,multiple_paintings,a\n"
        f"{shared_data}/opencv-pairs/query/leuvenB.jpg,unknown,not_in_collection,b\n"
    )
    return {"manifest": manifest, "extra": extra, "folder": folder}


@pytest.fixture(scope="session")
def evaluation(pairs_index: InstanceIndex, labelled: dict[str, Path]) -> EvaluationResult:
    """The labelled queries evaluated once per session, nearest neighbour, threshold 0.5."""
    return evaluate(
        pairs_index,
        labelled["manifest"],
        labelled["extra"],
        classifier="nn",
        threshold=THRESHOLD,
    )
