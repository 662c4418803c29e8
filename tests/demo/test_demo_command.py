"""``pyinstance demo``: the README's main-job line, end to end on the bundled collection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyinstance.cli import main
from pyinstance.commands.demo import _fresh_index_folder
from pyinstance.demo import COLLECTION_DIR, UNKNOWN_DIR
from pyinstance.index import InstanceIndex


@pytest.mark.slow
def test_demo_identifies_the_changed_photos_and_rejects_the_unknown_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    instances = sorted(p.name for p in COLLECTION_DIR.iterdir() if p.is_dir())
    unknowns = len(list(UNKNOWN_DIR.iterdir()))
    right, total = map(int, re.search(r"(\d+) of (\d+) right", printed).groups())
    assert total >= 5 * len(instances) + unknowns
    assert right >= total - 2  # the bundled default must do the job
    # 8 references: the default recipe's whitening is skipped, and the demo says so once
    assert printed.count("whitening skipped: the collection holds 8 reference image(s)") == 1
    page = (out / "results.html").read_text()
    assert page.count("<img") >= total and "http://" not in page and "https://" not in page
    with InstanceIndex.open(out / "index") as index:
        assert list(index.instances) == instances
        assert index.get_setting("threshold") is not None
        assert index.info()["whitening_skipped"].startswith("whitening skipped")
        assert index.descriptors().shape[1] == index.recipe.dim  # not whitened
    # a second run replaces its own index; a folder that is not an index is never removed
    _fresh_index_folder(out / "index")
    assert not (out / "index").exists()
    foreign = tmp_path / "foreign"
    (foreign / "index").mkdir(parents=True)
    (foreign / "index" / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(foreign)]) != 0
    assert "not a pyinstance index" in capsys.readouterr().err
    assert (foreign / "index" / "precious.txt").exists()
