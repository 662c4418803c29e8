"""``pyinstance index add/update --engine``: the engine that describes new images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pyinstance.cli import main
from pyinstance.index import Describer


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    code = main([*argv, "--json", "--no-progress"])
    out, _ = capsys.readouterr()
    assert code == 0
    return json.loads(out)


def test_add_and_update_take_the_engine(tmp_path: Path, pairs: Path, capsys, monkeypatch) -> None:
    requested: list[str] = []
    set_engine = Describer.set_engine

    def recording(self, engine="auto", **kwargs):
        requested.append(engine)
        return set_engine(self, engine, **kwargs)

    monkeypatch.setattr(Describer, "set_engine", recording)
    source = tmp_path / "src"
    (source / "box").mkdir(parents=True)
    shutil.copy(pairs / "reference" / "box.png", source / "box" / "box.png")
    ix = str(tmp_path / "ix")
    built = run_json(
        capsys, "index", "build", str(source), "-o", ix, "--max-side", "96", "--engine", "torch"
    )
    assert (built["engine"], requested) == ("torch", ["torch"])
    assert built["images_per_second"] > 0
    added = run_json(
        capsys,
        "index",
        "add",
        ix,
        str(pairs / "reference" / "graf1.png"),
        "--instance",
        "graf",
        "--engine",
        "torch",
    )
    assert (added["added"], added["engine"], requested[-1]) == (1, "torch", "torch")
    unchanged = run_json(capsys, "index", "update", ix, str(source), "--engine", "torch")
    assert (unchanged["unchanged"], unchanged["engine"], unchanged["images_per_second"]) == (
        1,
        None,
        None,
    )
    shutil.copy(pairs / "reference" / "home.jpg", source / "box" / "box.png")
    updated = run_json(capsys, "index", "update", ix, str(source), "--engine", "torch")
    assert (updated["updated"], updated["engine"]) == (1, "torch")


def test_unknown_engine_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "add", str(tmp_path / "ix"), str(tmp_path), "--engine", "tensorrt"])
    assert exit_info.value.code == 2
    assert "--engine: invalid choice: 'tensorrt'" in capsys.readouterr().err
